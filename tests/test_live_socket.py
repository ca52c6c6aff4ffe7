"""Socket.IO for a logged-in session: watching a device delivers its new messages."""

import json
import queue
import uuid

import socketio

from tests.conftest import cookie_header, wait_until


def publish(publisher, device_id, payload):
    """Publish as the device with QoS 1 and wait until the broker has it."""
    info = publisher.publish(f"{device_id}/message", payload, qos=1)
    info.wait_for_publish(timeout=5)
    assert info.is_published()


def test_logged_in_socket_receives_watched_device_messages(live_server, publisher, device_id):
    """A logged-in client that watches a device gets that device's new messages, and only those."""
    other_device = str(uuid.uuid4())
    session = live_server.login_session()
    received = queue.Queue()
    client = socketio.Client(reconnection=False)
    client.on("messages", received.put)
    client.connect(live_server.url, headers={"Cookie": cookie_header(session)}, wait_timeout=5)
    try:
        assert client.connected
        assert client.call("watch_device", {"device_id": device_id}, timeout=5)["ok"] is True
        assert client.call("watch_device", {"device_id": "x" * 200}, timeout=5)["ok"] is False

        publish(publisher, other_device, "not for this page")
        probe = f"probe-{uuid.uuid4().hex}"
        publish(publisher, device_id, json.dumps({"probe": probe}))

        batch = received.get(timeout=2)
        assert [m["topic"] for m in batch] == [f"{device_id}/message"]
        assert probe in batch[0]["body"]
        assert batch[0]["direction"] == "in"
        devices = live_server.db().devices
        wait_until(lambda: devices.find_one({"device_id": other_device}))
        assert received.empty()
    finally:
        client.disconnect()


def test_watching_with_a_cursor_catches_up_on_messages_stored_since(live_server, publisher, device_id):
    """A page that (re)subscribes gets what was stored after its newest message, oldest first."""
    for n in range(3):
        publish(publisher, device_id, json.dumps({"n": n}))
    wait_until(lambda: live_server.db().messages.count_documents({"device_id": device_id}) == 3)
    first = live_server.db().messages.find_one({"device_id": device_id, "data.n": 0})
    cursor = str(first["seq"])
    client = socketio.Client(reconnection=False)
    client.connect(
        live_server.url, headers={"Cookie": cookie_header(live_server.login_session())}, wait_timeout=5
    )
    try:
        reply = client.call("watch_device", {"device_id": device_id, "after": cursor}, timeout=5)
        assert reply["ok"] and reply["more"] is False
        assert [json.loads(m["body"])["n"] for m in reply["messages"]] == [1, 2]
        assert reply["device"]["message_count"] == 3
        bad = client.call("watch_device", {"device_id": device_id, "after": "garbage"}, timeout=5)
        assert bad == {"ok": False, "error": "bad cursor"}
    finally:
        client.disconnect()
