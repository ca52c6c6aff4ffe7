"""Devices added before they speak, and their tokens: made and revoked by operators, shown once, stored hashed."""

import pytest

from carweb.fleet import device_page, register_device
from carweb.models import AuditEntry, Device, DeviceToken
from carweb.models.token import token_digest
from tests.conftest import csrf_token


def test_an_operator_adds_a_device_that_tops_the_list(client, auth):
    """The page's form adds it; it takes the newest place in the list, with nothing counted yet."""
    register_device("older-car")
    auth.login("op@example.com", role="operator")
    response = client.post("/devices/add", data={"device_id": "new-car", "csrf_token": auth.token()})
    assert response.status_code == 302 and response.location.endswith("/devices/new-car")
    assert [d["device_id"] for d in device_page(limit=2).devices] == ["new-car", "older-car"]
    device = Device.objects.get(device_id="new-car")
    assert (device.message_count, device.last_seq, device.online) == (0, 0, False)
    again = client.post(
        "/devices/add", data={"device_id": "new-car", "csrf_token": auth.token()}, follow_redirects=True
    )
    assert "exists" in again.get_data(as_text=True)
    assert AuditEntry.objects(action="device added").count() == 1


@pytest.mark.parametrize(
    "device_id", ["a/b", "car+", "#", "two words", "$SYS", "x" * 129, "tab\there", "nul\x00"]
)
def test_ids_no_device_could_publish_under_are_refused(app, device_id):
    """The id is the first level of the device's topics: nothing a topic cannot start with."""
    with pytest.raises(ValueError):
        register_device(device_id)
    assert Device.objects.count() == 0


def test_a_device_token_is_shown_once_stored_hashed_and_revocable(client, auth):
    """Made on the device's page by an operator; the page lists it by name and first characters only."""
    register_device("tok-car")
    auth.login("op@example.com", role="operator")
    page = client.post(
        "/devices/tok-car/tokens", data={"name": "gateway", "csrf_token": auth.token("/devices/tok-car")}
    )
    assert page.status_code == 200
    secret = page.get_data(as_text=True).split('id="new-device-token">')[1].split("<")[0]
    assert secret.startswith("cwd_") and DeviceToken.find(secret).device_id == "tok-car"
    stored = DeviceToken.objects.get(device_id="tok-car")
    assert stored.digest == token_digest(secret) and secret not in str(stored.to_mongo())
    listing = client.get("/devices/tok-car").get_data(as_text=True)
    assert "gateway" in listing and stored.hint in listing and secret not in listing
    revoke = client.post(
        f"/devices/tok-car/tokens/{stored.pk}/revoke", data={"csrf_token": csrf_token(listing)}
    )
    assert revoke.status_code == 302 and DeviceToken.find(secret) is None
    assert {e.action for e in AuditEntry.objects} >= {"device token created", "device token revoked"}


def test_viewers_see_no_tokens_and_cannot_make_them(client, auth):
    """Tokens are credentials: only operators see the list."""
    register_device("seen-car")
    DeviceToken.create("seen-car", "secret-name")
    auth.login("viewer@example.com", role="viewer")
    assert "secret-name" not in client.get("/devices/seen-car").get_data(as_text=True)
    assert (
        client.post("/devices/seen-car/tokens", data={"name": "x", "csrf_token": auth.token()}).status_code
        == 403
    )


def test_the_device_commands_add_a_device_and_print_its_token(runner, app):
    """`flask device add ID` and `flask device token ID --name NAME` for scripts."""
    added = runner.invoke(args=["device", "add", "cli-car"])
    assert added.exit_code == 0 and "cli-car" in added.output
    assert runner.invoke(args=["device", "add", "cli-car"]).exit_code != 0
    made = runner.invoke(args=["device", "token", "cli-car", "--name", "factory"])
    assert made.exit_code == 0
    assert DeviceToken.find(made.output.strip()).name == "factory"
    unknown = runner.invoke(args=["device", "token", "nobody", "--name", "x"])
    assert unknown.exit_code != 0 and "unknown device" in unknown.output
