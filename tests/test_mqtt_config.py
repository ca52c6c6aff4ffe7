"""Broker URL parsing and client set-up."""

import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from carweb.bridge.mqtt import build_client, parse_mqtt_url
from tests.conftest import wait_until


def test_mqtt_url_with_credentials_and_default_port():
    """User and password are unquoted; ports default per scheme."""
    address = parse_mqtt_url("mqtt://car%40web:p%2Fss@hub.example.com")
    assert (address.host, address.port, address.tls) == ("hub.example.com", 1883, False)
    assert (address.username, address.password) == ("car@web", "p/ss")
    assert parse_mqtt_url("mqtts://hub.example.com").port == 8883
    assert parse_mqtt_url("mqtts://hub.example.com:9000").tls is True


@pytest.mark.parametrize("url", ["http://hub", "mqtt://", "hub:1883"])
def test_malformed_mqtt_url_is_refused(url):
    """Anything but mqtt:// or mqtts:// with a host is a configuration error."""
    with pytest.raises(ValueError):
        parse_mqtt_url(url)


def test_client_uses_fixed_id_and_persistent_session_for_mqtt_311():
    """MQTT 3.1.1 clients keep their session (clean_session false) under the configured id."""
    config = {"MQTT_URL": "mqtt://127.0.0.1:1", "MQTT_CLIENT_ID": "carweb-host", "MQTT_PROTOCOL": "3.1.1"}
    client, _ = build_client(config)
    assert client._client_id == b"carweb-host"
    assert client._clean_session is False
    assert client.protocol == MQTTProtocolVersion.MQTTv311


def test_unknown_protocol_is_refused():
    """MQTT_PROTOCOL must be 5 or 3.1.1."""
    with pytest.raises(ValueError):
        build_client({"MQTT_URL": "mqtt://h", "MQTT_CLIENT_ID": "x", "MQTT_PROTOCOL": "4"})


def test_shared_property_tables_keep_paho_properties_working():
    """After sharing paho's tables, properties still pack, unpack and stay per instance."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from carweb.bridge.mqtt import share_property_tables

    share_property_tables()
    sent = Properties(PacketTypes.PUBLISH)
    sent.UserProperty = ("msg-id", "m-1")
    sent.MessageExpiryInterval = 60
    received = Properties(PacketTypes.PUBLISH)
    received.unpack(sent.pack())
    assert received.UserProperty == [("msg-id", "m-1")] and received.MessageExpiryInterval == 60
    assert not hasattr(Properties(PacketTypes.PUBLISH), "UserProperty")
    received.clear()
    assert not hasattr(received, "UserProperty") and received.names is sent.names
    connect = Properties(PacketTypes.CONNECT)
    connect.SessionExpiryInterval = 3600
    assert Properties(PacketTypes.CONNECT).unpack(connect.pack())[0].SessionExpiryInterval == 3600


def test_a_client_whose_socket_number_is_above_select_limit_still_works(services):
    """Past 1,023 open descriptors (a web process with many sockets) paho's select() would fail; poll() does not."""
    import resource
    import socket
    import threading

    from carweb.bridge.mqtt import connect_async

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if max(soft, hard if hard != resource.RLIM_INFINITY else 4096) < 1200:
        pytest.skip("the descriptor limit is below 1,200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [socket.socket() for _ in range(1030)]  # the next descriptors are numbered above 1023
    config = {"MQTT_URL": services.mqtt_url, "MQTT_SESSION_EXPIRY": 60, "MQTT_RECEIVE_MAXIMUM": 10}
    config["MQTT_MAX_PACKET"] = 1024 * 1024
    client, address = build_client(config, client_id="high-descriptor", persistent=False)
    subscribed, received = threading.Event(), []
    client.on_connect = lambda c, *_: c.subscribe("high-descriptor/#", qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = lambda _c, _u, msg: received.append(msg.payload)
    try:
        connect_async(client, address, config, persistent=False)
        client.reconnect()
        assert client.socket().fileno() > 1023
        client.loop_start()
        assert subscribed.wait(5)
        client.publish("high-descriptor/x", b"through poll", qos=1).wait_for_publish(5)
        wait_until(lambda: received == [b"through poll"], timeout=5)
    finally:
        client.disconnect()
        client.loop_stop()
        for sock in held:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
