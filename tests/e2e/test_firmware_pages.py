"""Firmware in a real browser: upload through the form, start an update, follow it live."""

import hashlib
import os
import uuid

import pytest
from playwright.sync_api import expect

from tests.e2e.test_live_pages import assert_not_reloaded, mark_window, wait_until_live
from tests.ota_support import start_rollout, upload_image, wait_for_devices

pytestmark = pytest.mark.e2e
COUNT_IO_CALLS = """
window.__ioCalls = 0;
Object.defineProperty(window, "io", {
  configurable: true,
  get() { return this.__carwebIo; },
  set(lib) {
    const counted = function () { window.__ioCalls += 1; return lib.apply(this, arguments); };
    this.__carwebIo = Object.assign(counted, lib);
  },
});
"""

UPDATE_TIMEOUT_MS = 30_000


def test_upload_then_update_a_simulated_car_from_its_page(page, login, live_server, fleet, tmp_path):
    """The upload form stores the image (by XHR, with progress); the device page follows the job to UPDATED."""
    (device_id,) = fleet(1, step_delay=1.0)
    wait_for_devices(live_server, [device_id])
    image = tmp_path / "ecu.bin"
    image.write_bytes(os.urandom(400_000))
    title, version = f"ecu-{uuid.uuid4().hex[:6]}", "3.0.0"
    login()

    page.goto(f"{live_server.url}/firmware/upload")
    page.fill("input[name=title]", title)
    page.fill("input[name=version]", version)
    page.set_input_files("input[name=file]", str(image))
    page.fill("textarea[name=notes]", "Faster boot.")
    with page.expect_response(
        lambda r: r.url.endswith("/firmware/upload") and r.request.method == "POST"
    ) as sent:
        page.click("#upload-form [type=submit]")
    assert sent.value.request.headers.get("x-requested-with") == "XMLHttpRequest"
    expect(page.locator("#firmware-sha256")).to_have_text(hashlib.sha256(image.read_bytes()).hexdigest())
    expect(page.locator(".flash-success")).to_contain_text(f"{title} {version} uploaded")

    # Count the page's io() calls: a reconnect under load makes a second Engine.IO
    # handshake on the same socket, a second io() a second connection.
    page.add_init_script(COUNT_IO_CALLS)
    page.goto(f"{live_server.url}/devices/{device_id}")
    wait_until_live(page)
    assert page.evaluate("window.__ioCalls") == 1, (
        "messages, firmware and charts share one Socket.IO connection"
    )
    page.select_option("#update-form select", label=f"{title} {version}")
    with page.expect_navigation():
        page.click("#update-form [type=submit]")
    wait_until_live(page)
    marker = mark_window(page)
    state = page.locator("#update-history tbody tr").first.locator("[data-field=state]")
    expect(state).not_to_have_text("UPDATED")  # each step takes a second: the page shows it in progress

    expect(state).to_have_text("UPDATED", timeout=UPDATE_TIMEOUT_MS)
    expect(page.locator("#device-firmware")).to_have_text(version)
    expect(page.locator("#update-history tbody tr")).to_have_count(1)
    assert_not_reloaded(page, marker)


def test_rollout_and_image_pages_follow_the_jobs(page, page_events, login, live_server, fleet, tmp_path):
    """Two cars in waves 50/100: the image page gains both jobs, the rollout page counts them, live."""
    title, version, _, firmware_id, _ = upload_image(live_server, tmp_path, size=50_000)
    devices = fleet(2, step_delay=0.8)
    wait_for_devices(live_server, devices)
    login()
    page.goto(f"{live_server.url}/firmware/{firmware_id}")
    wait_until_live(page)
    image_marker = mark_window(page)
    expect(page.locator("#no-jobs")).to_be_visible()

    rollout_id = start_rollout(live_server, title, version, devices, "--waves", "50,100")
    rollout_page = page.context.new_page()
    page_events.watch(rollout_page)
    rollout_page.goto(f"{live_server.url}/firmware/rollouts/{rollout_id}")
    wait_until_live(rollout_page)
    rollout_marker = mark_window(rollout_page)
    updated = rollout_page.locator('#state-counts [data-count-state="UPDATED"] [data-field=count]')
    expect(updated).not_to_have_text("2")  # two waves of four 0.8 s steps: still under way

    expect(updated).to_have_text("2", timeout=UPDATE_TIMEOUT_MS)
    expect(rollout_page.locator("#rollout-state")).to_have_text("COMPLETED")
    expect(rollout_page.locator('#state-counts [data-count-state="QUEUED"] [data-field=count]')).to_have_text(
        "0"
    )
    for wave in ("0", "1"):
        bar = rollout_page.locator(f'#waves .wave[data-wave="{wave}"]')
        expect(bar.locator("[data-field=done]")).to_have_text("1")
        assert bar.locator("progress").evaluate("p => p.value") == 1
    expect(rollout_page.locator("#cancel-form")).to_be_hidden()
    expect(rollout_page.locator("#job-table tbody tr[data-state=UPDATED]")).to_have_count(2)
    assert_not_reloaded(rollout_page, rollout_marker)

    rows = page.locator("#firmware-jobs tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.locator("[data-field=state]")).to_have_text(["UPDATED", "UPDATED"])
    expect(page.locator("#no-jobs")).to_be_hidden()
    for device_id in devices:
        link = page.locator(f'#firmware-jobs tbody tr a[data-field=device_id]:text-is("{device_id}")')
        expect(link).to_have_attribute("href", f"/devices/{device_id}")
    assert_not_reloaded(page, image_marker)
