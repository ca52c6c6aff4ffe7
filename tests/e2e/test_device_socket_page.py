"""A WebSocket device in a real browser's view: its messages are stored once, acked once, and shown live."""

import json
from collections import Counter

import pytest
from playwright.sync_api import expect

from tests.conftest import wait_until
from tests.e2e.test_live_pages import LIVE_TIMEOUT_MS, wait_until_live
from tests.ws_support import connect, device_token, message

pytestmark = pytest.mark.e2e
MESSAGES = 1000


def test_a_thousand_socket_messages_with_a_repeat_are_stored_and_acked_once_and_shown_live(
    page, login, live_server, device_id
):
    """1,001 frames, one id sent twice: 1,000 stored, each id acked once (the repeat as a duplicate), live on the page."""
    ws = connect(live_server.url, device_token(live_server.db(), device_id))
    try:
        watch_and_send(page, login, live_server, device_id, ws)
    finally:
        ws.close()


def watch_and_send(page, login, live_server, device_id, ws):
    """Open the device's page, send the frames, check answers, database and page."""
    assert ws.ready["device"] == device_id
    devices = live_server.db().devices
    wait_until(lambda: devices.find_one({"device_id": device_id, "online": True}))  # carweb said `online`
    login()
    page.goto(f"{live_server.url}/devices/{device_id}")
    wait_until_live(page)

    frames = [message(n, speed=n % 180) for n in range(MESSAGES)]
    frames.insert(500, message(123, speed=123))  # sent again before its ack came
    for frame in frames:
        ws.send(frame)
    answers = [json.loads(ws.recv()) for _ in frames]

    acks = Counter(a["ack"] for a in answers if "ack" in a and not a.get("duplicate"))
    assert [a for a in answers if "ack" not in a] == []
    assert acks == Counter({f"m{n}": 1 for n in range(MESSAGES)})
    assert [a["ack"] for a in answers if a.get("duplicate")] == ["m123"]
    stored = list(live_server.db().messages.find({"device_id": device_id, "topic": f"{device_id}/telemetry"}))
    assert sorted(doc["msg_id"] for doc in stored) == sorted(f"m{n}" for n in range(MESSAGES))
    assert len({doc["seq"] for doc in stored}) == MESSAGES

    expect(page.locator("#message-count")).to_have_text(
        str(MESSAGES + 1), timeout=LIVE_TIMEOUT_MS
    )  # + online
    # The page grows to 500 rows live, then offers the newest (static/js/device.js).
    expect(page.locator("#message-list > li", has_text='"n": 498')).to_have_count(1, timeout=LIVE_TIMEOUT_MS)
    note = page.locator("#pending-note")
    expect(note).to_contain_text(f"{MESSAGES - 499} new messages", timeout=LIVE_TIMEOUT_MS)
    note.locator("a").click()
    expect(page.locator("#message-list > li").first).to_contain_text('"n": 999')
