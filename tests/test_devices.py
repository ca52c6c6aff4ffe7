"""Device list, device page, rename, delete and raw payload download."""

from datetime import UTC, datetime, timedelta

from carweb.models import Device, Message
from tests.conftest import csrf_token
from tests.ingest_support import store_as_bridge

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def publish(topic, payload, seconds=0):
    """Store one message as the bridge would."""
    return store_as_bridge(topic, payload, T0 + timedelta(seconds=seconds))[0]


def test_device_list_is_sorted_by_last_seen_and_shows_counts(client, auth):
    """Most recently seen first, with state and message count."""
    publish("old-car/t", b"1", 0)
    publish("new-car/t", b"1", 10)
    publish("new-car/t", b"2", 11)
    auth.login()
    html = client.get("/devices").get_data(as_text=True)
    assert html.index("new-car") < html.index("old-car")
    assert 'data-field="message_count">2<' in html


def test_device_list_searches_id_and_name_case_insensitively(client, auth):
    """The search matches part of an id or a name; regex characters are literal."""
    publish("alpha-1/t", b"1")
    publish("beta-2/t", b"1")
    Device.objects(device_id="beta-2").update(set__name="Delivery Van")
    auth.login()
    assert "alpha-1" in client.get("/devices?q=ALPHA").get_data(as_text=True)
    found = client.get("/devices?q=van").get_data(as_text=True)
    assert "beta-2" in found and "alpha-1" not in found
    assert "No device matches" in client.get("/devices?q=.*").get_data(as_text=True)


def older_link(html, anchor="older-devices"):
    """The href of the page's link with id `anchor`, or None."""
    if f'id="{anchor}" href="' not in html:
        return None
    return html.split(f'id="{anchor}" href="')[1].split('"')[0].replace("&amp;", "&")


def test_device_list_is_paged_by_cursor(client, auth, app):
    """Page size from config; an `Older` link only when there is more, each device once."""
    app.config["CARWEB_PAGE_SIZE"] = 2
    for n in range(5):
        publish(f"car-{n}/t", b"1", n)
    auth.login()
    seen, link = [], "/devices"
    while link:
        html = client.get(link).get_data(as_text=True)
        seen.append([f"car-{n}" for n in range(5) if f'data-device-id="car-{n}"' in html])
        link = older_link(html)
    assert seen == [["car-3", "car-4"], ["car-1", "car-2"], ["car-0"]]


def test_device_page_shows_history_newest_first_with_pager(client, auth, app):
    """The newest page first, an `Older` cursor link to the rest."""
    app.config["CARWEB_PAGE_SIZE"] = 3
    for n in range(5):
        publish("pager/telemetry", f'{{"n": {n}}}'.encode(), n)
    auth.login()
    html = client.get("/devices/pager").get_data(as_text=True)
    assert html.index("&#34;n&#34;: 4") < html.index("&#34;n&#34;: 2") and "&#34;n&#34;: 1" not in html
    older = html.split('id="older-link" href="')[1].split('"')[0].replace("&amp;", "&")
    rest = client.get(older).get_data(as_text=True)
    assert "&#34;n&#34;: 1" in rest and "&#34;n&#34;: 0" in rest and 'id="older-link"' not in rest


def test_script_payload_and_name_are_escaped(client, auth):
    """Markup in payloads and names is shown as text."""
    publish("xss/message", b"<script>alert(1)</script>")
    Device.objects(device_id="xss").update(set__name="<script>alert(1)</script>")
    auth.login()
    for path in ("/devices", "/devices/xss"):
        html = client.get(path).get_data(as_text=True)
        assert "<script>alert(1)</script>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_binary_payload_is_shown_as_hex_and_downloadable_exactly(client, auth):
    """Bytes that are not UTF-8 show as hex and download as the same bytes."""
    raw = bytes([0xFF, 0x00, 0xC3, 0x28])
    stored = publish("bin/blob", raw)
    auth.login()
    assert "ff 00 c3 28" in client.get("/devices/bin").get_data(as_text=True)
    download = client.get(f"/devices/bin/messages/{stored['_id']}/payload")
    assert download.data == raw and download.headers["Content-Type"] == "application/octet-stream"
    assert "attachment" in download.headers["Content-Disposition"]


def test_history_filters_by_topic_and_refuses_bad_input(client, auth):
    """A topic filter narrows the page; bad cursors and ranges show an error, not a crash."""
    publish("f/telemetry", b"tele", 0)
    publish("f/status", b"online", 1)
    auth.login()
    html = client.get("/devices/f?topic=f/status").get_data(as_text=True)
    assert ">online<" in html and ">tele<" not in html
    assert "Bad page cursor." in client.get("/devices/f?before=nope").get_data(as_text=True)
    bad_range = client.get("/devices/f?since=2026-11-02T00:00&until=2026-11-01T00:00").get_data(as_text=True)
    assert "&#39;To&#39; is before &#39;From&#39;." in bad_range


def test_unknown_device_is_404(client, auth):
    """No such device: the 404 page."""
    auth.login()
    assert client.get("/devices/ghost").status_code == 404


def test_operator_renames_device(client, auth):
    """Post/redirect/get; the new name shows on the page."""
    publish("ren/t", b"1")
    auth.login(role="operator", email="op@example.com")
    response = client.post(
        "/devices/ren/rename", data={"name": " Van 7 ", "csrf_token": auth.token("/devices/ren")}
    )
    assert response.status_code == 302
    assert Device.objects.get(device_id="ren").name == "Van 7"
    assert "Van 7" in client.get("/devices/ren").get_data(as_text=True)


def test_viewer_cannot_rename_or_delete(client, auth):
    """Viewers only look."""
    publish("ro/t", b"1")
    auth.login(role="viewer", email="viewer@example.com")
    token = auth.token("/devices/ro")
    assert client.post("/devices/ro/rename", data={"name": "x", "csrf_token": token}).status_code == 403
    assert client.post("/devices/ro/delete", data={"csrf_token": token}).status_code == 403
    assert Device.objects.get(device_id="ro").name is None


def test_delete_asks_first_then_removes_device_and_messages(client, auth):
    """GET shows a confirmation; POST deletes the device and every message it sent."""
    publish("gone/t", b"1")
    publish("gone/t", b"2", 1)
    publish("kept/t", b"3")
    auth.login()
    confirm = client.get("/devices/gone/delete")
    assert confirm.status_code == 200 and "cannot be undone" in confirm.get_data(as_text=True)
    assert Device.objects(device_id="gone").count() == 1
    token = csrf_token(confirm.get_data(as_text=True))
    response = client.post("/devices/gone/delete", data={"csrf_token": token})
    assert response.status_code == 302
    assert Device.objects(device_id="gone").count() == 0 and Message.objects(device_id="gone").count() == 0
    assert Message.objects(device_id="kept").count() == 1
