"""What a browser or script may send that carweb did not expect: a 4xx, never a 500 or a way off the site."""

from datetime import UTC, datetime

import pytest

from tests.conftest import PASSWORD, csrf_token
from tests.ingest_support import store_as_bridge

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def login_with_next(client, auth, next_url):
    """Post the login form of /login?next=<next_url, sent as is in the query string>."""
    auth.create()
    page = client.get("/login?next=" + next_url)
    data = {
        "email": "admin@example.com",
        "password": PASSWORD,
        "csrf_token": csrf_token(page.get_data(as_text=True)),
    }
    return client.post("/login?next=" + next_url, data=data)


@pytest.mark.parametrize(
    "next_url",
    [
        "/%09/evil.com",
        "/%0a/evil.com",
        "/%0d%0aSet-Cookie:%20x=1",
        "//evil.com",
        "/%5Cevil.com",
        "/%20/evil.com",
        "/%7f/evil.com",
        "https://evil.com/",
        "javascript:alert(1)",
        "%2F%2Fevil.com",
    ],
)
def test_login_never_redirects_off_the_site(client, auth, next_url):
    """Whatever `next` holds, the login lands on this site: the device list when `next` is not a plain path."""
    response = login_with_next(client, auth, next_url)
    assert response.status_code == 302 and response.location == "/devices"


def test_login_goes_to_a_local_next_path(client, auth):
    """A plain local path, with a query string, is where the login goes."""
    response = login_with_next(client, auth, "/firmware%3Fpage%3D2")
    assert response.status_code == 302 and response.location == "/firmware?page=2"


def test_metrics_with_a_non_ascii_bearer_token_is_refused(client):
    """401, as for any wrong token."""
    response = client.get("/metrics", headers={"Authorization": "Bearer ünïcödé"})
    assert response.status_code == 401


def test_payload_download_with_a_malformed_message_id_is_not_found(client, auth):
    """404 for an id that is no ObjectId, as for one that names nothing."""
    store_as_bridge("car-1/t", b"x", NOW)
    auth.login()
    for message_id in ("nope", "0" * 25, "%00", "ffffffffffffffffffffffff"):
        assert client.get(f"/devices/car-1/messages/{message_id}/payload").status_code == 404, message_id


@pytest.mark.parametrize(
    "query",
    [
        "since=0001-01-01T00:00",
        "until=0001-01-01T00:00",
        "since=9999-12-31T23:59",
        "until=9999-12-31T23:59",
        "since=2026-13-01T00:00",
        "before=abc",
        "before=99999999999999999999",
        "since=2026-02-01T00:00&until=2026-01-01T00:00",
    ],
)
def test_history_filters_out_of_range_answer_400_with_the_form(client, auth, query):
    """The page shows the form and what is wrong with it, with status 400."""
    store_as_bridge("car-1/t", b"x", NOW)
    auth.login()
    response = client.get(f"/devices/car-1?{query}")
    assert response.status_code == 400
    assert 'class="filters"' in response.get_data(as_text=True)


def test_watch_device_with_a_bad_cursor_says_so(live_server):
    """The reply is ok: false with the reason, whatever the cursor's type; the connection stays usable."""
    client = live_server.socket(live_server.login_session())
    try:
        for after in (12, 1.5, ["1"], {"seq": 1}, True, "abc", "-1", "9" * 40, "\ud800"):
            reply = client.call("watch_device", {"device_id": "car-1", "after": after}, timeout=5)
            assert reply == {"ok": False, "error": "bad cursor"}, after
        assert client.call("watch_device", {"device_id": "car-1"}, timeout=5)["ok"] is True
    finally:
        client.disconnect()


def test_one_connection_cannot_join_room_after_room(live_server):
    """Fifty rooms per connection; past them a watch is refused, and a room joined before still answers."""
    client = live_server.socket(live_server.login_session())
    try:
        replies = [client.call("watch_device", {"device_id": f"room-{n}"}, timeout=5) for n in range(60)]
        assert [r["ok"] for r in replies] == [True] * 50 + [False] * 10
        assert replies[-1]["error"] == "too many rooms"
        assert client.call("watch_device", {"device_id": "room-0"}, timeout=5)["ok"] is True
    finally:
        client.disconnect()


def test_watch_rollout_refuses_job_ids_that_are_not_one_page_of_ids(live_server):
    """Not a list, not ids, or more than a page: refused with the reason."""
    client = live_server.socket(live_server.login_session())
    try:
        for job_ids in ("abc", [1], ["nope"], ["0" * 24] * 101, {"a": 1}):
            reply = client.call("watch_rollout", {"rollout_id": "0" * 24, "job_ids": job_ids}, timeout=5)
            assert reply == {"ok": False, "error": "bad job ids"}, job_ids
        reply = client.call("watch_rollout", {"rollout_id": "0" * 24, "job_ids": ["0" * 24]}, timeout=5)
        assert reply == {"ok": False, "error": "no such rollout"}
    finally:
        client.disconnect()
