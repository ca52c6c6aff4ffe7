"""The audit log: every action on record, and the admin page that reads it by keyset pages."""

import re

from carweb.models import AuditEntry, Device, Rollout
from carweb.models.audit import ACTIONS
from tests.test_firmware_pages import rollout_form, upload
from tests.test_users import NEW_PASSWORD, post_form


def actions():
    """(action, who, target) of every entry, oldest first."""
    return [(e.action, e.who, e.target) for e in AuditEntry.objects.order_by("id")]


def test_logins_and_logouts_are_on_record(client, auth):
    """A failed login names the email it tried; a login and a logout name the user, with the address."""
    auth.create()
    token = re.search(
        r'name="csrf_token"[^>]*value="([^"]+)"', client.get("/login").get_data(as_text=True)
    ).group(1)
    client.post(
        "/login", data={"email": "Who@Example.com", "password": "wrong password", "csrf_token": token}
    )
    auth.login()
    post_form(client, "/devices", "/logout")
    assert actions() == [
        ("login failed", "who@example.com", None),
        ("login", "admin@example.com", None),
        ("logout", "admin@example.com", None),
    ]
    assert {e.address for e in AuditEntry.objects} == {"127.0.0.1"}
    assert AuditEntry.objects(action="login").first().role == "admin"


def test_changes_to_users_devices_and_firmware_are_on_record(client, auth):
    """Each change names who did it and what it touched."""
    auth.login()
    AuditEntry.objects.delete()
    post_form(client, "/users", "/users", email="ops@example.com", role="operator", password=NEW_PASSWORD)
    ops = AuditEntry.objects(action="user created").first()
    assert ops.target == "ops@example.com" and ops.details == {"role": "operator"}
    Device(device_id="car-1").save()
    post_form(client, "/devices/car-1", "/devices/car-1/rename", name="Van")
    upload(client, auth)
    firmware_id = re.search(
        r"/firmware/([0-9a-f]{24})", client.get("/firmware").get_data(as_text=True)
    ).group(1)
    rollout_form(client, auth, type("F", (), {"pk": firmware_id}), devices="car-1")
    rollout = Rollout.objects.get()
    post_form(client, f"/firmware/rollouts/{rollout.pk}", f"/firmware/rollouts/{rollout.pk}/cancel")
    post_form(client, "/devices/car-1/delete", "/devices/car-1/delete")
    assert [a for a, _, _ in actions()] == [
        "user created",
        "device renamed",
        "firmware uploaded",
        "rollout started",
        "rollout canceled",
        "device deleted",
    ]
    assert {who for _, who, _ in actions()} == {"admin@example.com"}
    assert AuditEntry.objects(action="rollout canceled").first().target == str(rollout.pk)


def test_the_audit_page_filters_and_pages_by_keyset(client, auth):
    """120 entries: pages of 50 newest first, each entry once; filters by action and by user."""
    auth.login()
    AuditEntry.objects.delete()
    for n in range(120):
        AuditEntry(who=f"u{n % 3}@example.com", action=ACTIONS[n % 4], target=f"t{n}").save()
    seen, path = [], "/audit"
    while path:
        page = client.get(path).get_data(as_text=True)
        seen += re.findall(r"<td>(t\d+)</td>", page)
        older = re.search(r'href="(/audit\?[^"]*before=[0-9a-f]{24}[^"]*)"', page)
        path = older.group(1).replace("&amp;", "&") if older else None
    assert seen == [f"t{n}" for n in reversed(range(120))]
    page = client.get("/audit?action=logout&who=U1@example.com").get_data(as_text=True)
    wanted = [f"t{n}" for n in reversed(range(120)) if ACTIONS[n % 4] == "logout" and n % 3 == 1]
    assert re.findall(r"<td>(t\d+)</td>", page) == wanted


def test_a_bad_audit_filter_answers_400(client, auth):
    """An unknown action or a cursor that is not one: the page says so."""
    auth.login()
    assert client.get("/audit?action=nonsense").status_code == 400
    assert client.get("/audit?before=zzz").status_code == 400
    assert client.get(f"/audit?who={'x' * 300}").status_code == 400


def test_firmware_upload_records_size_and_hash(client, auth):
    """The upload's entry carries the image's size and SHA-256."""
    auth.login()
    upload(client, auth, data=b"\x07" * 1000)
    entry = AuditEntry.objects(action="firmware uploaded").first()
    assert (
        entry.target == "ecu 1.0.0" and entry.details["size"] == "1000" and len(entry.details["sha256"]) == 64
    )
