"""The load generator's MQTT packets (bench/mqtt_wire.py) and payloads (pure functions)."""

import json

import pytest

from bench.loadgen import poison_payloads, telemetry_payload, telemetry_tails
from bench.mqtt_wire import (
    PacketStream,
    connect_packet,
    decode_remaining_length,
    publish_packet,
    remaining_length_bytes,
)

BOUNDARIES = [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 268_435_455]


@pytest.mark.parametrize("length", BOUNDARIES)
def test_remaining_length_round_trips_at_every_size_boundary(length):
    encoded = remaining_length_bytes(length)
    assert decode_remaining_length(encoded, 0) == (length, len(encoded))


def test_remaining_length_uses_the_bytes_of_the_mqtt_spec_examples():
    assert remaining_length_bytes(321) == b"\xc1\x02"
    assert remaining_length_bytes(16_384) == b"\x80\x80\x01"


def test_remaining_length_beyond_the_mqtt_maximum_is_refused():
    with pytest.raises(ValueError):
        remaining_length_bytes(268_435_456)


def test_remaining_length_cut_short_waits_for_more_bytes():
    assert decode_remaining_length(b"\x80\x80", 0) is None


def test_remaining_length_of_five_bytes_is_malformed():
    with pytest.raises(ValueError):
        decode_remaining_length(b"\x80\x80\x80\x80\x01", 0)


def test_connect_asks_for_mqtt_3_1_1_clean_session_with_keepalive():
    packet = connect_packet("dev-1", 120)
    assert packet == b"\x10\x11\x00\x04MQTT\x04\x02\x00\x78\x00\x05dev-1"


def test_connect_with_credentials_sets_both_flags_and_appends_them():
    packet = connect_packet("d", 60, "user", "secret")
    assert packet[9] == 0x02 | 0x80 | 0x40
    assert packet.endswith(b"\x00\x01d\x00\x04user\x00\x06secret")


def test_connect_with_a_password_but_no_username_is_refused():
    with pytest.raises(ValueError):
        connect_packet("d", 60, None, "secret")


def test_publish_is_qos1_with_topic_packet_id_and_payload():
    payload = b"x" * 300
    packet = publish_packet(b"\x00\x07a/topic", 513, payload)
    [(first_byte, body)] = PacketStream().feed(packet)
    assert first_byte == 0x32
    assert body == b"\x00\x07a/topic\x02\x01" + payload


def test_stream_returns_several_packets_from_one_read():
    data = b"\x40\x02\x00\x01" + b"\xd0\x00" + b"\x40\x02\x00\x02"
    assert PacketStream().feed(data) == [(0x40, b"\x00\x01"), (0xD0, b""), (0x40, b"\x00\x02")]


def test_stream_joins_packets_split_across_reads_byte_by_byte():
    big = publish_packet(b"\x00\x01t", 7, b"y" * 20_000)
    data = b"\x20\x02\x00\x00" + big + b"\x40\x02\x00\x07"
    stream, packets = PacketStream(), []
    for position in range(len(data)):
        packets += stream.feed(data[position : position + 1])
    assert [first_byte for first_byte, _ in packets] == [0x20, 0x32, 0x40]
    assert len(packets[1][1]) == 3 + 2 + 20_000
    assert stream.buffer == bytearray()


def test_telemetry_is_json_with_counter_time_and_optional_msg_id():
    tail = telemetry_tails()[3]
    plain = json.loads(telemetry_payload(5, 1700000000.12345, tail, False))
    tagged = json.loads(telemetry_payload(5, 1700000000.12345, tail, True))
    assert plain["n"] == 5 and plain["t"] == 1700000000.123 and "msg_id" not in plain
    assert {"speed", "rpm"} <= plain.keys()
    assert tagged["msg_id"] == "5"


def test_poison_contains_literal_escapes_and_the_required_kinds():
    makers = dict(poison_payloads())
    assert makers["lone_surrogate_value"](3) == b'{"x": "\\ud800", "n": 3}'
    assert makers["invalid_utf8_bytes"](0) == b"\xff\xfe\x80"
    assert makers["empty"](0) == b""
    assert len(makers["random_400kib"](0)) == 400 * 1024
    assert json.loads(makers["json_300kib"](9))["n"] == 9
    assert len(makers["key_100kb"](0)) > 100_000
    assert makers["nested_10000_deep"](0).count(b"[") == 10_000
    assert json.loads(makers["plain_json"](4)) == {"speed": 50.5, "rpm": 2100, "n": 4}
