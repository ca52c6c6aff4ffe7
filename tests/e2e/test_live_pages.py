"""Live pages in a real browser: messages and counts arrive over Socket.IO without a reload."""

import json
import uuid
from urllib.parse import urlparse

import pytest
import socketio
from playwright.sync_api import expect

from tests.conftest import wait_until

pytestmark = pytest.mark.e2e

LIVE_TIMEOUT_MS = 5_000
SCRIPT_PAYLOAD = "<script>alert(1)</script>"
IMG_PAYLOAD = '<img src=x onerror="alert(3)"><b>bold?</b>'
IMG_NAME = "<img src=x onerror=alert(2)>"


def publish(publisher, device_id, payload, subtopic="message"):
    """Publish `payload` as the device with QoS 1 and wait until the broker has it."""
    info = publisher.publish(f"{device_id}/{subtopic}", payload, qos=1)
    info.wait_for_publish(timeout=5)
    assert info.is_published()


def wait_for_device(live_server, device_id, count=1):
    """Wait until the bridge has stored `count` messages of the device."""
    devices = live_server.db().devices
    wait_until(lambda: (devices.find_one({"device_id": device_id}) or {}).get("message_count", 0) >= count)


def wait_until_live(page):
    """Wait for the page's Socket.IO connection (the indicator in the top bar)."""
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#live-status")).to_have_text("live")


def mark_window(page):
    """Leave a marker on `window` that a reload or navigation would wipe; return it."""
    marker = uuid.uuid4().hex
    page.evaluate("marker => { window.__carwebMarker = marker; }", marker)
    return marker


def assert_not_reloaded(page, marker):
    """The page is still the same document: one navigation and the marker is still there."""
    assert page.evaluate("window.__carwebMarker") == marker
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1


def test_new_message_appears_on_open_device_page_without_reload(
    page, login, live_server, publisher, device_id
):
    """A message published while the device page is open shows at the top of its list."""
    publish(publisher, device_id, json.dumps({"speed_kmh": 42, "gear": 3}))
    wait_for_device(live_server, device_id)
    login()
    page.goto(f"{live_server.url}/devices/{device_id}")
    wait_until_live(page)
    messages = page.locator("#message-list > li")
    expect(messages).to_have_count(1)
    marker = mark_window(page)

    probe = f"probe-{uuid.uuid4().hex}"
    publish(publisher, device_id, json.dumps({"probe": probe, "battery_v": 12.6}))

    expect(messages.first).to_contain_text(probe, timeout=LIVE_TIMEOUT_MS)
    expect(messages).to_have_count(2)
    expect(messages.first.locator("[data-field=topic]")).to_have_text(f"{device_id}/message")
    expect(messages.first.locator("[data-field=kind]")).to_have_text("json")
    expect(page.locator("#message-count")).to_have_text("2")
    assert_not_reloaded(page, marker)

    publish(publisher, device_id, "engine started", subtopic="events")
    publish(publisher, device_id, bytes([0, 159, 146, 150, 255]), subtopic="can/raw")
    expect(messages).to_have_count(4, timeout=LIVE_TIMEOUT_MS)
    page.screenshot(path="/tmp/carweb-device.png", full_page=True)
    page.goto(f"{live_server.url}/devices")
    wait_until_live(page)
    page.screenshot(path="/tmp/carweb-devices.png", full_page=True)


def test_device_list_updates_counts_live(page, login, live_server, publisher, device_id):
    """The device list updates a row's message count and adds rows for new devices, in place."""
    publish(publisher, device_id, json.dumps({"odometer_km": 1}))
    wait_for_device(live_server, device_id)
    login()
    page.goto(f"{live_server.url}/devices")
    wait_until_live(page)
    count_cell = page.locator(f'tr[data-device-id="{device_id}"] [data-field=message_count]')
    expect(count_cell).to_have_text("1")
    marker = mark_window(page)

    publish(publisher, device_id, json.dumps({"odometer_km": 2}))
    publish(publisher, device_id, json.dumps({"odometer_km": 3}))
    expect(count_cell).to_have_text("3", timeout=LIVE_TIMEOUT_MS)

    newcomer = str(uuid.uuid4())
    new_row = page.locator(f'tr[data-device-id="{newcomer}"]')
    expect(new_row).to_have_count(0)
    publish(publisher, newcomer, json.dumps({"hello": "world"}))
    expect(new_row.locator("[data-field=message_count]")).to_have_text("1", timeout=LIVE_TIMEOUT_MS)
    expect(new_row.locator("[data-field=name]")).to_have_text(newcomer)
    expect(new_row.locator("[data-field=online]")).to_have_text("online")
    expect(new_row.locator("[data-field=name]")).to_have_attribute("href", f"/devices/{newcomer}")
    expect(count_cell).to_have_text("3")
    assert_not_reloaded(page, marker)


def test_script_payload_and_name_are_shown_as_text(
    page, page_events, login, live_server, publisher, device_id
):
    """Markup in payloads and device names is shown as text, live and rendered; nothing runs."""
    publish(publisher, device_id, SCRIPT_PAYLOAD)
    wait_for_device(live_server, device_id)
    record_csp_violations(page)
    login()
    page.goto(f"{live_server.url}/devices/{device_id}")
    wait_until_live(page)
    bodies = page.locator("#message-list > li [data-field=body]")
    expect(bodies).to_have_text([SCRIPT_PAYLOAD])

    publish(publisher, device_id, IMG_PAYLOAD)
    expect(bodies).to_have_text([IMG_PAYLOAD, SCRIPT_PAYLOAD], timeout=LIVE_TIMEOUT_MS)
    assert page.locator("#message-list script, #message-list img, #message-list b").count() == 0

    page.reload()
    wait_until_live(page)
    expect(bodies).to_have_text([IMG_PAYLOAD, SCRIPT_PAYLOAD])
    assert page.locator("#message-list script, #message-list img, #message-list b").count() == 0
    assert csp_violations(page) == []

    page.click("summary:has-text('Rename or delete')")
    page.fill("input[name=name]", IMG_NAME)
    with page.expect_navigation():
        page.click("details form [type=submit]")
    expect(page.locator("h1#device-name")).to_have_text(IMG_NAME)
    assert page.locator("h1#device-name img").count() == 0
    assert IMG_NAME in page.title()

    page.goto(f"{live_server.url}/devices")
    wait_until_live(page)
    name_link = page.locator(f'tr[data-device-id="{device_id}"] [data-field=name]')
    expect(name_link).to_have_text(IMG_NAME)
    publish(publisher, device_id, "after rename")
    expect(page.locator(f'tr[data-device-id="{device_id}"] [data-field=message_count]')).to_have_text(
        "3", timeout=LIVE_TIMEOUT_MS
    )
    expect(name_link).to_have_text(IMG_NAME)
    assert page.locator("#device-table img").count() == 0
    assert page_events.dialogs == []
    assert csp_violations(page) == []


def record_csp_violations(page):
    """Make every page the browser loads keep its Content-Security-Policy violations."""
    page.context.add_init_script(
        """window.__cspViolations = [];
           document.addEventListener("securitypolicyviolation", event =>
             window.__cspViolations.push(event.violatedDirective + " " + event.blockedURI));"""
    )


def csp_violations(page):
    """What the current page's policy refused so far."""
    return page.evaluate("window.__cspViolations")


def test_every_page_runs_under_its_policy_without_a_violation(page, page_events, login, live_server):
    """Each page carweb renders loads and goes live under its CSP, with nothing refused and no error."""
    record_csp_violations(page)
    login()
    for path in ("/devices", "/firmware", "/firmware/upload", "/users", "/account", "/audit"):
        response = page.goto(f"{live_server.url}{path}")
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"], path
        page.wait_for_load_state("load")
        assert csp_violations(page) == [], path
    assert page_events.dialogs == []


def test_page_without_login_redirects_and_socket_is_refused(page, live_server, publisher, device_id):
    """Without a login a device page redirects to /login and Socket.IO refuses to connect."""
    publish(publisher, device_id, "hello")
    wait_for_device(live_server, device_id)

    page.goto(f"{live_server.url}/devices/{device_id}")
    assert urlparse(page.url).path == "/login"
    expect(page.locator("input[name=password]")).to_be_visible()

    page.add_script_tag(url=f"{live_server.url}/static/vendor/socket.io.min.js")
    refusal = page.evaluate(
        """() => new Promise(resolve => {
             const socket = io({reconnection: false});
             socket.on("connect", () => { socket.disconnect(); resolve("connected"); });
             socket.on("connect_error", err => { socket.disconnect(); resolve(err.message); });
           })"""
    )
    assert refusal == "login required"

    client = socketio.Client(reconnection=False)
    refusals = []
    client.on("connect_error", refusals.append)
    with pytest.raises(socketio.exceptions.ConnectionError, match="failed to connect"):
        client.connect(live_server.url, wait_timeout=5)
    assert not client.connected
    # python-socketio raises a generic message; the server's reason arrives as connect_error data.
    assert refusals == [{"message": "login required"}]
