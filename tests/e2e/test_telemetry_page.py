"""Telemetry charts in a real browser: drawn from the stored messages, picked by the user, growing live."""

import json
import math
import time

import pytest
from playwright.sync_api import expect

from tests.e2e.test_live_pages import publish, wait_for_device, wait_until_live

pytestmark = pytest.mark.e2e


def chart(page, name):
    """The chart of one series on the page."""
    return page.locator(f'#charts .chart[data-series="{name}"]')


def stored_seconds(live_server, device_id):
    """The distinct whole seconds the device's messages were stored at (the 15-minute range's buckets)."""
    docs = live_server.db().messages.find({"device_id": device_id}, {"received_at": 1})
    return {math.floor(doc["received_at"].timestamp()) for doc in docs}


def test_charts_show_the_stored_values_let_the_user_pick_series_and_grow_live(
    page, login, live_server, publisher, device_id
):
    for n in range(6):
        payload = {
            "speed": 40 + n,
            "rpm": 1500 + 100 * n,
            "engine": {"temp": 80 + n},
            "on": n % 2 == 0,
            "vin": "W0L",
        }
        publish(publisher, device_id, json.dumps(payload), subtopic="telemetry")
        time.sleep(1.05)  # one message per one-second bucket of the 15-minute range
    wait_for_device(live_server, device_id, count=6)
    buckets = len(stored_seconds(live_server, device_id))
    login()
    page.goto(f"{live_server.url}/devices/{device_id}?chart_range=15m")
    wait_until_live(page)
    names = page.locator('#series-list input[name="series"]')
    expect(names).to_have_count(4)  # speed, rpm, engine.temp, on; the VIN is no number
    first_three = ["telemetry: engine.temp", "telemetry: on", "telemetry: rpm"]
    for name in first_three:
        expect(chart(page, name)).to_have_attribute("data-points", str(buckets))
    expect(chart(page, "telemetry: speed")).to_have_count(0)
    expect(page.locator("#chart-note")).to_contain_text("Buckets of 1 s")

    page.check('#series-list input[value="telemetry: speed"]')
    expect(chart(page, "telemetry: speed")).to_have_attribute("data-points", str(buckets))
    assert "chart_series=telemetry%3A+speed" in page.evaluate("location.href")  # a reload keeps the choice

    time.sleep(1.1)  # the next message lands in a bucket of its own
    publish(publisher, device_id, json.dumps({"speed": 99.5, "rpm": 4000}), subtopic="telemetry")
    expect(chart(page, "telemetry: speed")).to_have_attribute("data-points", str(buckets + 1))
    expect(chart(page, "telemetry: rpm")).to_have_attribute("data-points", str(buckets + 1))
    expect(chart(page, "telemetry: on")).to_have_attribute("data-points", str(buckets))  # not in that message
    speed_row = page.locator('#series-list li:has(input[value="telemetry: speed"])')
    expect(speed_row.locator("[data-field=value]")).to_have_text("99.5")
    page.reload()
    wait_until_live(page)
    expect(chart(page, "telemetry: speed")).to_have_attribute("data-points", str(buckets + 1))
    page.screenshot(path="/tmp/carweb-telemetry.png")

    chart(page, "telemetry: speed").scroll_into_view_if_needed()
    area = chart(page, "telemetry: speed").locator(".u-over").bounding_box()
    page.mouse.move(area["x"] + area["width"] * 0.9, area["y"] + area["height"] / 2)
    page.mouse.down()
    page.mouse.move(area["x"] + area["width"] + 20, area["y"] + area["height"] / 2, steps=5)
    page.mouse.up()  # zoomed into the newest tenth: read again for that stretch, no longer live
    expect(page.locator("#chart-note")).to_contain_text("Pick a range to go back to live")
    address = page.evaluate("location.href")  # replaceState: Playwright's page.url may lag
    assert "chart_since=" in address and "chart_until=" in address
    expect(chart(page, "telemetry: speed")).to_have_attribute("data-points", str(buckets + 1))
    expect(page.locator('#chart-ranges [aria-pressed="true"]')).to_have_count(0)
