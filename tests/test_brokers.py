"""The bridge against other brokers: Mosquitto over TLS (as hosted hubs use) and amqtt (MQTT 3.1.1)."""

import uuid

import paho.mqtt.client as mqtt
import pymongo
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from carweb.devstack import free_port, start_amqtt, start_mosquitto, start_web, stop_processes
from tests.conftest import server_env, wait_until
from tests.tls_support import issue, make_ca


@pytest.fixture
def certificates(tmp_path):
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it."""
    ca = make_ca(tmp_path / "ca")
    return ca, issue(ca, "broker", server=True)


def published_message_is_stored(env, mqtt_port, tmp_path, **publish_tls):
    """Start carweb with `env`, publish as a device, and return the stored message."""
    with open(tmp_path / "carweb.log", "ab") as log:
        web = start_web(env, log_file=log)
    device_id = str(uuid.uuid4())
    try:
        device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{device_id[:8]}")
        if publish_tls:
            device.tls_set(**publish_tls)
        device.connect("127.0.0.1", mqtt_port)
        device.loop_start()
        device.publish(f"{device_id}/message", b"over another broker", qos=1).wait_for_publish(10)
        device.disconnect()
        device.loop_stop()
        with pymongo.MongoClient(env["MONGODB_URI"]) as client:
            messages = client.get_default_database().messages
            return wait_until(lambda: messages.find_one({"device_id": device_id}), timeout=20)
    finally:
        stop_processes([web])


def test_bridge_connects_over_tls_with_a_private_ca(services, certificates, tmp_path):
    """mqtts:// with MQTT_CA_FILE: the bridge verifies the broker and stores what devices send."""
    port = free_port()
    ca, (cert, key) = certificates
    tls = f"cafile {ca.cert}\ncertfile {cert}\nkeyfile {key}\n"
    with open(tmp_path / "mosquitto.log", "ab") as log:
        broker = start_mosquitto(port, tmp_path / "mosquitto", log_file=log, extra=tls)
    try:
        env = server_env(
            services,
            f"tls_{uuid.uuid4().hex[:8]}",
            free_port(),
            MQTT_URL=f"mqtts://127.0.0.1:{port}",
            MQTT_CA_FILE=str(ca.cert),
        )
        message = published_message_is_stored(env, port, tmp_path, ca_certs=str(ca.cert))
        assert message["payload"] == b"over another broker"
    finally:
        stop_processes([broker])


def test_bridge_works_with_amqtt_over_mqtt_311(services, tmp_path):
    """`make run` falls back to amqtt where Mosquitto is missing; the bridge then speaks 3.1.1."""
    port = free_port()
    with open(tmp_path / "amqtt.log", "ab") as log:
        broker = start_amqtt(port, tmp_path / "amqtt", log_file=log)
    try:
        env = server_env(
            services,
            f"amqtt_{uuid.uuid4().hex[:8]}",
            free_port(),
            MQTT_URL=f"mqtt://127.0.0.1:{port}",
            MQTT_PROTOCOL="3.1.1",
        )
        message = published_message_is_stored(env, port, tmp_path)
        assert message["text"] == "over another broker" and message["direction"] == "in"
    finally:
        stop_processes([broker])
