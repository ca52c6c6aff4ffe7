"""The JSON API: tokens, the same reads as the pages, rollouts by operators, JSON errors, CORS."""

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from carweb import config as carweb_config
from carweb import create_app
from carweb.models import ApiToken, AuditEntry, Rollout, User
from carweb.models.token import token_digest
from carweb.ota.store import store_firmware
from tests.conftest import PASSWORD, csrf_token
from tests.ingest_support import store_as_bridge

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
# What devices send: JSON, text with every character a CSV or a terminal trips on, raw bytes.
PAYLOADS = [
    b'{"speed": 87.5, "gear": 4}',
    'line one\nline "two", with ; and ,\r\n=1+2 \u00e9\U0001f697 \\u0000'.encode(),
    bytes(range(256)),
    b"",
]


def bearer(secret):
    """The header a script sends its token in."""
    return {"Authorization": f"Bearer {secret}"}


def token_of(role, email=None, **options):
    """A token of a (new) user with `role`: the secret."""
    user = User.create_or_update(email or f"{role}-api@example.com", PASSWORD, role=role)
    return ApiToken.create(user, f"{role} script", **options)[1]


@pytest.fixture
def history(app):
    """car-1 with 130 messages a minute apart on two topics (every payload kind), car-2 with one."""
    for n in range(130):
        topic = "car-1/telemetry" if n % 2 else "car-1/log"
        store_as_bridge(topic, PAYLOADS[n % len(PAYLOADS)], T0 + timedelta(minutes=n))
    store_as_bridge("car-2/telemetry", b"{}", T0)
    return "car-1"


def test_a_token_made_on_the_account_page_is_shown_once_stored_hashed_and_works_until_revoked(client, auth):
    """The whole token workflow of a user, through the pages and the API."""
    auth.login("viewer@example.com", role="viewer")
    token = auth.token("/account")
    page = client.post("/account/tokens", data={"name": "grafana", "expires_days": "30", "csrf_token": token})
    assert page.status_code == 200
    secret = page.get_data(as_text=True).split('id="new-token">')[1].split("<")[0]
    assert secret.startswith("cwt_") and len(secret) > 40
    assert secret not in client.get("/account").get_data(as_text=True)  # shown once
    stored = ApiToken.objects.get(name="grafana")
    assert stored.digest == token_digest(secret) and secret not in json.dumps(
        stored.to_mongo().to_dict(), default=str
    )
    assert abs(stored.expires_at - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=1)

    api = client.application.test_client()  # a script: no cookies
    assert api.get("/api/v1/devices", headers=bearer(secret)).status_code == 200
    assert ApiToken.objects.get(pk=stored.pk).last_used_at is not None

    revoke = client.post(f"/account/tokens/{stored.pk}/revoke", data={"csrf_token": auth.token("/account")})
    assert revoke.status_code == 302
    refused = api.get("/api/v1/devices", headers=bearer(secret))
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert refused.get_json()["message"]
    actions = [(e.action, e.details.get("name")) for e in AuditEntry.objects.order_by("id")]
    assert ("token created", "grafana") in actions and ("token revoked", "grafana") in actions


def test_tokens_stop_working_when_expired_or_their_user_is_deactivated(client):
    """Expiry and deactivation end a token; a made-up or malformed one never worked."""
    expired = token_of("viewer", "old@example.com", expires_days=1)
    ApiToken.objects(user_id=User.find_by_email("old@example.com").pk).update(
        set__expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    deactivated = token_of("operator", "gone@example.com")
    User.objects(email="gone@example.com").update(set__active=False)
    for secret in (expired, deactivated, "cwt_" + "x" * 43, "not-a-token", "cwt_\u00e9\u0000", "x" * 10_000):
        response = client.get("/api/v1/devices", headers=bearer(secret))
        assert response.status_code == 401, secret
        assert response.is_json and response.get_json()["code"] == 401
    assert client.get("/api/v1/devices", headers={"Authorization": "Basic dXNlcjpwdw=="}).status_code == 401


def test_an_admin_sees_and_revokes_another_users_tokens(client, auth):
    """The user's page lists their tokens; revoking one there ends it."""
    secret = token_of("operator", "ops@example.com")
    auth.login()
    user = User.find_by_email("ops@example.com")
    page = client.get(f"/users/{user.pk}").get_data(as_text=True)
    assert "operator script" in page and secret[:8] in page and secret not in page
    token = ApiToken.objects.get(user_id=user.pk)
    revoke = client.post(f"/users/{user.pk}/tokens/{token.pk}/revoke", data={"csrf_token": csrf_token(page)})
    assert revoke.status_code == 302
    script = client.application.test_client()  # no cookies (with the admin's session the session would act)
    assert script.get("/api/v1/devices", headers=bearer(secret)).status_code == 401
    # Another user's token is not yours to revoke on your own page.
    other = ApiToken.create(user, "second")[0]
    own = client.post(f"/account/tokens/{other.pk}/revoke", data={"csrf_token": auth.token("/account")})
    assert own.status_code == 404


def test_create_token_command_prints_a_working_token(runner, client):
    """`flask create-token EMAIL --name NAME --expires-days N` for automation."""
    User.create_or_update("ci@example.com", PASSWORD, role="operator")
    result = runner.invoke(
        args=["create-token", "ci@example.com", "--name", "pipeline", "--expires-days", "7"]
    )
    assert result.exit_code == 0, result.output
    secret = result.output.strip()
    assert client.get("/api/v1/devices", headers=bearer(secret)).status_code == 200
    entry = AuditEntry.objects.get(action="token created")
    assert (entry.who, entry.via, entry.details["name"]) == ("ci@example.com", "cli", "pipeline")
    unknown = runner.invoke(args=["create-token", "nobody@example.com", "--name", "x"])
    assert unknown.exit_code != 0 and "no active user" in unknown.output
    too_long = runner.invoke(args=["create-token", "ci@example.com", "--name", "x", "--expires-days", "0"])
    assert too_long.exit_code != 0


def test_device_list_pages_and_search(client, history):
    """Keyset pages, most recently seen first, and search by id."""
    headers = bearer(token_of("viewer"))
    first = client.get("/api/v1/devices?limit=1", headers=headers).get_json()
    assert [d["device_id"] for d in first["items"]] == ["car-2"] and first["next_cursor"]
    second = client.get(f"/api/v1/devices?limit=1&cursor={first['next_cursor']}", headers=headers).get_json()
    assert [d["device_id"] for d in second["items"]] == ["car-1"]
    assert second["items"][0]["message_count"] == 130
    found = client.get("/api/v1/devices?q=CAR-1", headers=headers).get_json()
    assert [d["device_id"] for d in found["items"]] == ["car-1"]
    one = client.get("/api/v1/devices/car-1", headers=headers)
    assert one.get_json()["device_id"] == "car-1"
    missing = client.get("/api/v1/devices/nope", headers=headers)
    assert missing.status_code == 404 and missing.get_json()["status"] == "Not Found"


def test_messages_are_the_pages_history_newest_first_by_cursor(client, history):
    """Following next_cursor walks every message once, newest first; filters as on the page."""
    headers = bearer(token_of("viewer"))
    seen, cursor = [], None
    while True:
        url = "/api/v1/devices/car-1/messages?limit=40" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=headers).get_json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [m["seq"] for m in seen] == list(range(130, 0, -1))
    by_kind = {m["kind"]: m for m in seen}
    assert by_kind["json"]["data"] == {"speed": 87.5, "gear": 4}
    assert by_kind["binary"]["payload_base64"] and by_kind["binary"]["text"] is None
    assert by_kind["text"]["text"] == PAYLOADS[1].decode()

    since, until = (T0 + timedelta(minutes=10)).isoformat(), (T0 + timedelta(minutes=19)).isoformat()
    url = f"/api/v1/devices/car-1/messages?topic=car-1/log&since={since}&until={until}"
    filtered = client.get(url.replace("+", "%2B"), headers=headers).get_json()
    assert [m["seq"] for m in filtered["items"]] == [19, 17, 15, 13, 11]


@pytest.mark.parametrize(
    "query",
    [
        "cursor=abc",
        "cursor=-1",
        "limit=0",
        "limit=201",
        "since=0001-01-01T00:00",
        "since=2026-01-02T00:00&until=2026-01-01T00:00",
        "since=yesterday",
        "topic=",
    ],
)
def test_bad_history_queries_answer_422_with_the_field_that_is_wrong(client, history, query):
    """Every refused query parameter says which one."""
    response = client.get(f"/api/v1/devices/car-1/messages?{query}", headers=bearer(token_of("viewer")))
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.get_json()["errors"]["query"]


def test_export_streams_every_message_oldest_first_as_csv_and_ndjson(client, history):
    """Both formats hold every message; text round-trips exactly, bytes as base64."""
    headers = bearer(token_of("viewer"))
    response = client.get("/api/v1/devices/car-1/messages/export?format=csv", headers=headers)
    assert response.status_code == 200 and response.is_streamed
    assert response.mimetype == "text/csv" and "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True), newline="")))
    assert [int(r["seq"]) for r in rows] == list(range(1, 131))
    assert rows[1]["payload"] == PAYLOADS[1].decode() and rows[1]["encoding"] == "utf-8"
    assert rows[2]["encoding"] == "base64"

    ndjson = client.get(
        "/api/v1/devices/car-1/messages/export?format=ndjson&topic=car-1/telemetry", headers=headers
    )
    lines = [json.loads(line) for line in ndjson.get_data(as_text=True).splitlines()]
    assert ndjson.mimetype == "application/x-ndjson"
    assert [line["seq"] for line in lines] == list(range(2, 131, 2))
    assert {line["topic"] for line in lines} == {"car-1/telemetry"}

    since = (T0 + timedelta(minutes=100)).isoformat().replace("+00:00", "Z")
    late = client.get(f"/api/v1/devices/car-1/messages/export?format=ndjson&since={since}", headers=headers)
    assert [json.loads(line)["seq"] for line in late.get_data(as_text=True).splitlines()] == list(
        range(101, 131)
    )
    assert client.get("/api/v1/devices/car-1/messages/export?format=xml", headers=headers).status_code == 422


def test_the_device_page_exports_with_its_session_and_filters(client, auth, history):
    """The page's export links call the API with the login session and carry the page's filters."""
    auth.login("viewer@example.com", role="viewer")
    page = client.get("/devices/car-1?topic=car-1/log").get_data(as_text=True)
    link = page.split('id="export-csv"')[1].split('href="')[1].split('"')[0].replace("&amp;", "&")
    assert link.startswith("/api/v1/devices/car-1/messages/export?")
    rows = list(csv.DictReader(io.StringIO(client.get(link).get_data(as_text=True), newline="")))
    assert len(rows) == 65 and {r["topic"] for r in rows} == {"car-1/log"}


def test_a_page_writes_through_the_api_only_with_its_csrf_token(client, auth, app):
    """The session cookie works for reads; a write with it needs the CSRF token, as forms do."""
    firmware = store_firmware(io.BytesIO(b"\x01" * 100), "ecu", "1.0")
    store_as_bridge("car-9/t", b"{}", T0)
    auth.login("op@example.com", role="operator")
    body = {"firmware_id": str(firmware.pk), "devices": ["car-9"]}
    assert client.post("/api/v1/rollouts", json=body).status_code == 400
    started = client.post("/api/v1/rollouts", json=body, headers={"X-CSRFToken": auth.token()})
    assert started.status_code == 201, started.get_data(as_text=True)


def test_operators_start_resume_and_cancel_rollouts_viewers_cannot(client, app):
    """Writes need the operator role; every one is on the audit log as done through the API."""
    for n in range(4):
        store_as_bridge(f"car-{n}/t", b"{}", T0)
    firmware = store_firmware(io.BytesIO(b"\x02" * 1000), "ecu", "3.0")
    viewer, operator = bearer(token_of("viewer")), bearer(token_of("operator"))
    body = {
        "firmware_id": str(firmware.pk),
        "devices": ["car-0", "car-1", "car-2", "car-3"],
        "waves": [25, 100],
    }
    refused = client.post("/api/v1/rollouts", json=body, headers=viewer)
    assert refused.status_code == 403 and refused.get_json()["code"] == 403
    started = client.post("/api/v1/rollouts", json=body, headers=operator)
    assert started.status_code == 201, started.get_json()
    rollout = started.get_json()
    assert rollout["device_count"] == 4 and sum(rollout["counts"].values()) == 4
    assert [w["size"] for w in rollout["wave_progress"]] == [1, 3]

    busy = client.post("/api/v1/rollouts", json=body, headers=operator)
    assert busy.status_code == 409 and "already being updated" in busy.get_json()["message"]
    unknown = client.post("/api/v1/rollouts", json={**body, "devices": ["nope"]}, headers=operator)
    assert unknown.status_code == 422 and "unknown device" in unknown.get_json()["message"]
    both = client.post("/api/v1/rollouts", json={**body, "all_devices": True}, headers=operator)
    assert both.status_code == 422

    jobs = client.get(f"/api/v1/rollouts/{rollout['id']}/jobs?limit=3", headers=viewer).get_json()
    assert [j["device_id"] for j in jobs["items"]] == ["car-0", "car-1", "car-2"] and jobs[
        "next_cursor"
    ] == "car-2"
    job = client.get(f"/api/v1/jobs/{jobs['items'][0]['id']}", headers=viewer).get_json()
    assert job["state"] == "SENT" and job["history"][-1]["state"] == "SENT"  # car-0 is the first wave

    assert client.post(f"/api/v1/rollouts/{rollout['id']}/resume", headers=operator).status_code == 409
    assert client.post(f"/api/v1/rollouts/{rollout['id']}/cancel", headers=viewer).status_code == 403
    canceled = client.post(f"/api/v1/rollouts/{rollout['id']}/cancel", headers=operator)
    assert canceled.status_code == 200 and canceled.get_json()["state"] == "CANCELED"
    assert Rollout.objects.get(pk=rollout["id"]).state == "CANCELED"
    entries = {e.action: e for e in AuditEntry.objects(via="api")}
    assert set(entries) == {"rollout started", "rollout canceled"}
    assert entries["rollout started"].who == "operator-api@example.com"
    assert entries["rollout started"].details["token"] == "operator script"

    listed = client.get(f"/api/v1/rollouts?firmware_id={firmware.pk}", headers=viewer).get_json()
    assert [r["id"] for r in listed["items"]] == [rollout["id"]]
    images = client.get("/api/v1/firmware", headers=viewer).get_json()
    assert [i["sha256"] for i in images["items"]] == [firmware.sha256]
    assert (
        client.get("/api/v1/devices/car-0/jobs", headers=viewer).get_json()["items"][0]["state"] == "CANCELED"
    )


def test_errors_are_json_under_the_api_and_pages_elsewhere(client):
    """404, 405 and a bad body answer JSON with a message under /api/v1; the pages keep their HTML."""
    headers = bearer(token_of("admin"))
    for method, path, status in [
        ("GET", "/api/v1/nothing-here", 404),
        ("GET", "/api/v1/firmware/not-an-id", 404),
        ("GET", "/api/v1/rollouts/" + "0" * 24, 404),
        ("DELETE", "/api/v1/devices", 405),
    ]:
        response = client.open(path, method=method, headers=headers)
        assert response.status_code == status and response.get_json()["message"], path
    garbage = client.post(
        "/api/v1/rollouts", data=b"\xff{", headers={**headers, "Content-Type": "application/json"}
    )
    assert garbage.status_code in (400, 422) and garbage.is_json
    assert client.get("/no-such-page").mimetype == "text/html"


def test_the_openapi_document_is_public_and_describes_every_route(client, app):
    """Generated from the schemas: every API route is in it, with the bearer scheme."""
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    routes = {
        rule.rule.replace("<", "{").replace(">", "}")
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/") and rule.endpoint != "api-docs.openapi_json"
    }
    assert routes == set(spec["paths"])


@pytest.fixture
def cors_client(app):
    """A test client of an app that lets one other origin call the API."""
    config = carweb_config.TestConfig(
        MONGODB_URI=app.config["MONGODB_URI"], CARWEB_CORS_ORIGINS=["https://dash.example.com"]
    )
    return create_app(config).test_client()


def test_cors_answers_only_the_configured_origin_and_only_on_the_api(cors_client):
    """Preflight and the call itself carry Access-Control-Allow-Origin for that origin, nowhere else."""
    secret = token_of("viewer")
    allowed, other = {"Origin": "https://dash.example.com"}, {"Origin": "https://evil.example.com"}
    preflight = cors_client.options(
        "/api/v1/devices",
        headers={
            **allowed,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "Authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://dash.example.com"
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    call = cors_client.get("/api/v1/devices", headers={**allowed, **bearer(secret)})
    assert call.headers["Access-Control-Allow-Origin"] == "https://dash.example.com"
    assert "Access-Control-Allow-Credentials" not in call.headers
    assert (
        "Access-Control-Allow-Origin"
        not in cors_client.get("/api/v1/devices", headers={**other, **bearer(secret)}).headers
    )
    assert "Access-Control-Allow-Origin" not in cors_client.get("/login", headers=allowed).headers


def test_without_cors_origins_no_origin_is_allowed(client):
    """The default: no cross-origin access at all."""
    response = client.get(
        "/api/v1/devices", headers={"Origin": "https://dash.example.com", **bearer(token_of("viewer"))}
    )
    assert response.status_code == 200 and "Access-Control-Allow-Origin" not in response.headers
