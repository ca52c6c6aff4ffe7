"""Publishing as carweb: the small interface `ota` uses to send commands to devices."""

import threading
import uuid

from carweb.background import running_bridge
from carweb.bridge.mqtt import build_client, connect_async

PUBLISH_TIMEOUT = 10


def publish(app, messages):
    """Publish (topic, payload, qos) tuples.

    In a process that runs the bridge, they go out on its connection and paho delivers
    them (resending after a reconnect) without anyone waiting: ota's handlers run inside
    the bridge's writer, and waiting there for the broker's acks while the network
    greenlet is blocked on a full ingest queue would stall the ingest. Elsewhere (the
    CLI, a web process with an external bridge) one short-lived connection under a client
    id of its own publishes and waits until the broker has every QoS 1 message.
    """
    bridge = running_bridge(app)
    if bridge is not None and bridge.mqtt_state == "connected":
        for topic, payload, qos in messages:
            bridge.publish(topic, payload, qos=qos)
        return
    _publish_once(app.config, messages)


def _publish_once(config, messages):
    """Connect, publish, wait for the broker's acks, disconnect."""
    client_id = f"{config['MQTT_CLIENT_ID']}-pub-{uuid.uuid4().hex[:8]}"
    client, address = build_client(config, manual_ack=False, client_id=client_id, persistent=False)
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    connect_async(client, address, config, persistent=False)
    client.loop_start()
    try:
        # paho refuses (rather than queues) a publish before the broker has accepted us.
        if not connected.wait(PUBLISH_TIMEOUT):
            raise TimeoutError(f"could not connect to the broker within {PUBLISH_TIMEOUT} s")
        infos = [client.publish(topic, payload, qos=qos) for topic, payload, qos in messages]
        for info in infos:
            info.wait_for_publish(PUBLISH_TIMEOUT)
            if not info.is_published():
                raise TimeoutError(f"the broker did not acknowledge {info.mid} within {PUBLISH_TIMEOUT} s")
    finally:
        client.disconnect()
        client.loop_stop()
