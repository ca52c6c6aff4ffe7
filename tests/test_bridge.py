"""The embedded bridge in a real gunicorn process, fed by a real broker."""

import requests

from tests.conftest import wait_until


def stored_count(live_server, device_id):
    """How many messages of a device are in `messages`."""
    return live_server.db().messages.count_documents({"device_id": device_id})


def test_published_message_is_stored_and_registers_the_device(live_server, publisher, device_id):
    """A device publishing on `<id>/message` appears with its message."""
    publisher.publish(f"{device_id}/message", b'{"hello": "world"}', qos=1).wait_for_publish(5)
    device = wait_until(lambda: live_server.db().devices.find_one({"device_id": device_id}))
    assert device["message_count"] == 1 and device["online"] is True
    message = live_server.db().messages.find_one({"device_id": device_id})
    assert message["topic"] == f"{device_id}/message" and message["data"] == {"hello": "world"}
    assert (
        message["payload"] == b'{"hello": "world"}' and message["qos"] == 1 and message["direction"] == "in"
    )


def test_thousand_qos1_messages_at_once_are_all_stored_exactly_once(live_server, publisher, device_id):
    """1,000 messages published back to back: 1,000 documents and message_count 1000."""
    infos = [
        publisher.publish(f"{device_id}/telemetry", f'{{"n": {n}}}'.encode(), qos=1) for n in range(1000)
    ]
    for info in infos:
        info.wait_for_publish(30)
    wait_until(lambda: stored_count(live_server, device_id) >= 1000, timeout=60)
    device = wait_until(
        lambda: (
            (d := live_server.db().devices.find_one({"device_id": device_id}))
            and d["message_count"] >= 1000
            and d
        )
    )
    numbers = sorted(
        m["data"]["n"] for m in live_server.db().messages.find({"device_id": device_id}, {"data": 1})
    )
    assert numbers == list(range(1000))
    assert device["message_count"] == 1000


def test_one_mebibyte_payload_is_stored_truncated_and_the_bridge_goes_on(live_server, publisher, device_id):
    """A payload over MQTT_MAX_PAYLOAD (256 KiB) is cut and marked; the next message still arrives."""
    publisher.publish(f"{device_id}/blob", b"\xab" * (1024 * 1024), qos=1).wait_for_publish(10)
    publisher.publish(f"{device_id}/after", b"still here", qos=1).wait_for_publish(10)
    wait_until(lambda: stored_count(live_server, device_id) == 2)
    blob = live_server.db().messages.find_one({"topic": f"{device_id}/blob"})
    assert blob["truncated"] is True and blob["size"] == 1024 * 1024 and len(blob["payload"]) == 256 * 1024


def test_unusable_topics_are_dropped_without_stopping_the_bridge(live_server, publisher, device_id):
    """Empty and overlong first levels are dropped; later messages are stored."""
    publisher.publish("/no-device", b"x", qos=1).wait_for_publish(5)
    publisher.publish("x" * 300 + "/t", b"x", qos=1).wait_for_publish(5)
    publisher.publish(f"{device_id}/ok", b"fine", qos=1).wait_for_publish(5)
    wait_until(lambda: stored_count(live_server, device_id) == 1)
    assert live_server.db().messages.count_documents({"topic": "/no-device"}) == 0
    assert requests.get(f"{live_server.url}/healthz", timeout=5).status_code == 200


def test_healthz_reports_database_and_broker(live_server):
    """200 with db ok and mqtt connected while both are up."""
    response = requests.get(f"{live_server.url}/healthz", timeout=5)
    body = response.json()
    assert response.status_code == 200
    assert body["db"] == "ok" and body["mqtt"] == "connected" and body["bridge"] == "running"


def test_metrics_count_received_and_stored_messages(live_server, publisher, device_id):
    """/metrics serves the bridge's counters in Prometheus text format to a logged-in user."""
    publisher.publish(f"{device_id}/m", b"1", qos=1).wait_for_publish(5)
    wait_until(lambda: stored_count(live_server, device_id) == 1)
    session = live_server.login_session()
    text = session.get(f"{live_server.url}/metrics", timeout=5).text
    stored = next(line for line in text.splitlines() if line.startswith("carweb_messages_stored_total"))
    assert float(stored.split()[-1]) >= 1
    assert requests.get(f"{live_server.url}/metrics", timeout=5).status_code == 401
