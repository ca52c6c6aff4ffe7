"""Who may do what: every route and Socket.IO event, for every role and for anonymous visitors."""

import io
from datetime import UTC, datetime

import pytest
import socketio

from carweb.models import ApiToken, Device, DeviceToken, Message, UpdateJob, User
from carweb.ota.rollouts import create_rollout
from carweb.ota.store import store_firmware
from tests.conftest import PASSWORD, csrf_token
from tests.ingest_support import store_as_bridge

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

RANK = {"anonymous": 0, "viewer": 1, "operator": 2, "admin": 3}
# (method, path, the least role that may use it). Destructive rows come last: each role's
# test runs the whole table in order on a database of its own.
ROUTES = [
    ("GET", "/", "viewer"),
    ("GET", "/devices", "viewer"),
    ("GET", "/devices?page=2&q=car", "viewer"),
    ("GET", "/devices/{device}", "viewer"),
    ("GET", "/devices/{device}?topic=car-1/t&since=2026-01-01T00:00", "viewer"),
    ("GET", "/devices/{device}/messages/{message}/payload", "viewer"),
    ("GET", "/metrics", "viewer"),
    ("GET", "/firmware", "viewer"),
    ("GET", "/firmware/{firmware}", "viewer"),
    ("GET", "/firmware/rollouts/{rollout}", "viewer"),
    ("GET", "/api/v1/devices", "viewer"),
    ("GET", "/api/v1/devices?q=car&limit=5", "viewer"),
    ("GET", "/api/v1/devices/{device}", "viewer"),
    ("GET", "/api/v1/devices/{device}/messages?topic=car-1/%23", "viewer"),
    ("GET", "/api/v1/devices/{device}/messages/export?format=ndjson", "viewer"),
    ("GET", "/api/v1/devices/{device}/jobs", "viewer"),
    ("GET", "/api/v1/firmware", "viewer"),
    ("GET", "/api/v1/firmware/{firmware}", "viewer"),
    ("GET", "/api/v1/rollouts", "viewer"),
    ("GET", "/api/v1/rollouts/{rollout}", "viewer"),
    ("GET", "/api/v1/rollouts/{rollout}/jobs", "viewer"),
    ("GET", "/api/v1/jobs/{job}", "viewer"),
    ("POST", "/devices/{device}/rename", "operator"),
    ("POST", "/devices/add", "operator"),
    ("POST", "/devices/{device}/tokens", "operator"),
    ("POST", "/devices/{device}/tokens/{device_token}/revoke", "operator"),
    ("GET", "/firmware/upload", "operator"),
    ("POST", "/firmware/upload", "operator"),
    ("GET", "/firmware/{firmware}/rollout", "operator"),
    ("POST", "/firmware/{firmware}/rollout", "operator"),
    ("POST", "/firmware/devices/{device}/update", "operator"),
    ("POST", "/firmware/rollouts/{rollout}/resume", "operator"),
    ("POST", "/firmware/rollouts/{rollout}/cancel", "operator"),
    ("POST", "/api/v1/rollouts", "operator"),
    ("POST", "/api/v1/rollouts/{rollout}/resume", "operator"),
    ("POST", "/api/v1/rollouts/{rollout}/cancel", "operator"),
    ("GET", "/account", "viewer"),
    ("POST", "/account", "viewer"),
    ("GET", "/audit", "admin"),
    ("GET", "/audit?action=login&who=someone@example.com", "admin"),
    ("GET", "/users", "admin"),
    ("POST", "/users", "admin"),
    ("GET", "/users/{user}", "admin"),
    ("POST", "/users/{user}", "admin"),
    ("POST", "/users/{user}/password", "admin"),
    ("POST", "/users/{user}/logout", "admin"),
    ("GET", "/devices/{device}/delete", "admin"),
    ("GET", "/firmware/{firmware}/delete", "admin"),
    ("POST", "/firmware/{firmware}/delete", "admin"),
    ("POST", "/devices/{device}/delete", "admin"),
]
PUBLIC = [
    ("GET", "/login", 200),
    ("GET", "/healthz", 200),
    ("GET", "/firmware/download/nope", 403),
    ("GET", "/api/v1/openapi.json", 200),
]
EVENTS = [
    ("watch_devices", None),
    ("watch_device", {"device_id": "car-1", "after": "1"}),
    ("watch_rollout", {"rollout_id": "0" * 24}),
    ("watch_firmware", {"firmware_id": "0" * 24}),
    ("watch_device_firmware", {"device_id": "car-1"}),
]


@pytest.fixture
def fleet_data(app):
    """One device with a message, one image and a running rollout to it: what the paths name."""
    store_as_bridge("car-1/t", b"{}", NOW)
    Device.objects(device_id="car-1").update_one(set__fw_version="1.0.0", upsert=True)
    firmware = store_firmware(io.BytesIO(b"\x01" * 1000), "ecu", "2.0.0")
    rollout = create_rollout(app, firmware, ["car-1"])
    message = Message.objects(device_id="car-1").first()
    someone = User.create_or_update("someone@example.com", PASSWORD, role="viewer")
    job = UpdateJob.objects(rollout_id=rollout.pk).first()
    device_token = DeviceToken.create("car-1", "table")[0]
    ids = {
        "message": message.pk,
        "firmware": firmware.pk,
        "rollout": rollout.pk,
        "user": someone.pk,
        "job": job.pk,
        "device_token": device_token.pk,
    }
    return {"device": "car-1", **ids}


def log_in_as(client, auth, role):
    """Log in with a user of `role`; anonymous stays logged out."""
    if role != "anonymous":
        assert auth.login(f"{role}@example.com", role=role).status_code == 302


def request(client, method, path, role):
    """GET, or POST with a CSRF token of the session (any form's token is valid for all of them)."""
    if method == "GET":
        return client.get(path)
    page = "/login" if role == "anonymous" else "/devices"  # the login form, or the logout form
    return client.post(path, data={"csrf_token": csrf_token(client.get(page).get_data(as_text=True))})


@pytest.mark.parametrize("role", list(RANK))
def test_every_route_answers_each_role_as_its_table_says(client, auth, fleet_data, role):
    """Allowed: neither 401/403 nor 5xx nor the login page. Refused: 403, or the login for anonymous."""
    log_in_as(client, auth, role)
    for method, template, least in ROUTES:
        path = template.format(**fleet_data)
        response = request(client, method, path, role)
        where = f"{role} {method} {path}: {response.status_code}"
        assert response.status_code < 500, where
        if role == "anonymous":
            expected = 401 if path == "/metrics" or path.startswith("/api/") else 302
            assert response.status_code == expected, where
            assert expected == 401 or response.location.startswith("/login"), where
        elif RANK[role] < RANK[least]:
            assert response.status_code == 403, where
        else:
            assert response.status_code not in (401, 403), where
            assert not (response.location or "").startswith("/login"), where
    logout = request(client, "POST", "/logout", role)
    assert logout.status_code == 302 and logout.location.startswith("/login")
    assert client.get("/devices").status_code == 302
    for method, path, status in PUBLIC:
        assert client.open(path, method=method).status_code == status, f"after {role} logged out: {path}"


@pytest.mark.parametrize("role", list(RANK))
def test_every_api_route_answers_each_roles_token_as_the_table_says(client, fleet_data, role):
    """A token acts with its owner's role; without one every API route answers 401 in JSON."""
    headers = {}
    if role != "anonymous":
        user = User.create_or_update(f"{role}-token@example.com", PASSWORD, role=role)
        headers["Authorization"] = f"Bearer {ApiToken.create(user, 'table')[1]}"
    for method, template, least in ROUTES:
        if not template.startswith("/api/"):
            continue
        path = template.format(**fleet_data)
        response = client.open(path, method=method, headers=headers, json={} if method == "POST" else None)
        where = f"{role} {method} {path}: {response.status_code}"
        assert response.status_code < 500 and response.is_json or method == "GET" and "export" in path, where
        if role == "anonymous":
            assert response.status_code == 401, where
        elif RANK[role] < RANK[least]:
            assert response.status_code == 403, where
        else:
            assert response.status_code not in (401, 403), where


def socket_as(live_server, role):
    """A Socket.IO client of the live server with the session of a user of `role` (none: anonymous)."""
    if role == "anonymous":
        return live_server.socket()
    email = f"socket-{role}@example.com"
    live_server.create_user(email, role=role)
    return live_server.socket(live_server.login_session(email))


@pytest.mark.parametrize("role", list(RANK))
def test_every_socket_event_answers_each_role(live_server, role):
    """Every role reads live updates; an anonymous connection is refused before any event."""
    if role == "anonymous":
        with pytest.raises(socketio.exceptions.ConnectionError):
            socket_as(live_server, role)
        return
    client = socket_as(live_server, role)
    try:
        for event, data in EVENTS:
            args = (data,) if data is not None else ()
            reply = client.call(event, *args, timeout=5)
            assert reply is True or "error" not in reply or "login" not in reply["error"], (role, event)
            assert reply is True or reply.get("ok") is True or reply.get("error") == "no such rollout", reply
    finally:
        client.disconnect()


def test_every_form_refuses_a_post_without_its_csrf_token(client, auth, fleet_data):
    """400 for every POST route, for an admin who may do everything."""
    log_in_as(client, auth, "admin")
    for method, template, _ in ROUTES + [
        ("POST", "/logout", "viewer"),
        ("POST", "/account/logout", "viewer"),
    ]:
        if method == "POST":
            response = client.post(template.format(**fleet_data), data={"name": "x"})
            assert response.status_code == 400, f"{template}: {response.status_code}"
    assert client.post("/login", data={"email": "a@example.com", "password": "x" * 12}).status_code == 400
