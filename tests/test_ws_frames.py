"""The device WebSocket's frames and limits, as pure functions."""

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carweb.devices.ws_frames import (
    CommandAck,
    DeviceMessage,
    FrameError,
    TokenBucket,
    ack_frame,
    command_frame,
    error_frame,
    parse_frame,
)


def test_a_message_keeps_its_id_topic_and_payload_as_the_device_meant_it():
    """JSON payloads are sent as JSON text, strings as their text, base64 as its bytes."""
    assert parse_frame('{"topic": "telemetry", "payload": {"speed": 87.5}, "id": 7}') == DeviceMessage(
        7, "7", "telemetry", b'{"speed":87.5}'
    )
    assert (
        parse_frame('{"topic": "status", "payload": "online", "id": "s", "retain": true}').payload
        == b"online"
    )
    raw = parse_frame(json.dumps({"topic": "can/raw", "payload_base64": "AP8=", "id": "r"}))
    assert raw.payload == b"\x00\xff" and raw.msg_id == "r" and not raw.retain
    assert (
        parse_frame('{"topic": "t", "payload": "caf\\u00e9 \\ud83d\\ude97", "id": 1}').payload
        == "café 🚗".encode()
    )
    assert parse_frame('{"ack": "c12"}') == CommandAck("c12")


@pytest.mark.parametrize(
    ("frame", "frame_id", "reason"),
    [
        ("{not json", None, "not JSON"),
        ("[1, 2]", None, "JSON object"),
        ('{"topic": "t", "payload": 1}', None, "needs an id"),
        ('{"topic": "t", "payload": 1, "id": true}', True, "needs an id"),
        ('{"topic": "t", "payload": 1, "id": ""}', "", "needs an id"),
        (json.dumps({"topic": "t", "id": "x" * 201}), "x" * 201, "at most 200"),
        ('{"topic": "t", "payload": 1, "id": "\\ud800"}', "\ud800", "valid Unicode"),
        ('{"topic": "\\udfff", "payload": 1, "id": 3}', 3, "valid Unicode"),
        ('{"payload": 1, "id": 3}', 3, "needs a topic"),
        ('{"topic": "a/+/b", "id": 3}', 3, "no \\+ #"),
        ('{"topic": "firmware/update", "payload": {}, "id": 3}', 3, "carweb sends to devices"),
        ('{"topic": "firmware/chunk/j/4", "payload": {}, "id": 3}', 3, "carweb sends to devices"),
        ('{"topic": "t", "payload": 1, "payload_base64": "AA==", "id": 3}', 3, "not both"),
        ('{"topic": "t", "payload_base64": "not base64!", "id": 3}', 3, "not base64"),
    ],
)
def test_refused_frames_say_why_and_carry_their_id_when_it_could_be_read(frame, frame_id, reason):
    """Every refusal is a FrameError naming the cause; the id is echoed when the frame had one."""
    with pytest.raises(FrameError, match=reason) as refused:
        parse_frame(frame)
    assert refused.value.id == frame_id


def test_binary_frames_are_refused():
    """Frames are JSON text."""
    with pytest.raises(FrameError, match="not binary"):
        parse_frame(b'{"topic": "t"}')


def test_a_lone_surrogate_in_a_payload_keeps_the_devices_bytes():
    """JSON allows \\ud800; it has no UTF-8, so the payload keeps it as the escape (stored as JSON text)."""
    message = parse_frame('{"topic": "t", "payload": {"k": "\\ud800"}, "id": 1}')
    assert json.loads(message.payload) == {"k": "\ud800"}


@given(st.text(max_size=300))
def test_any_text_is_parsed_or_refused_never_anything_else(text):
    """Whatever a device sends, the socket answers it: a message, an ack, or a FrameError."""
    try:
        frame = parse_frame(text)
    except FrameError:
        return
    assert isinstance(frame, (DeviceMessage, CommandAck))


@given(
    st.dictionaries(
        st.sampled_from(["topic", "payload", "payload_base64", "id", "retain", "ack"]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
            lambda inner: (
                st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=10,
        ),
    )
)
def test_any_json_object_is_parsed_or_refused(fields):
    """Frames with any field of any type: a message whose payload is bytes and whose id is text, or a FrameError."""
    try:
        frame = parse_frame(json.dumps(fields))
    except FrameError:
        return
    if isinstance(frame, DeviceMessage):
        assert isinstance(frame.payload, bytes) and frame.msg_id.encode("utf-8")
        assert frame.topic.encode("utf-8")


def test_commands_go_down_as_json_and_chunks_as_base64():
    """An update command keeps its JSON; a chunk (bytes, empty past the end) is base64."""
    update = json.loads(command_frame("firmware/update", b'{"job": "j1", "version": "2.0"}', "c1"))
    assert update == {"topic": "firmware/update", "payload": {"job": "j1", "version": "2.0"}, "id": "c1"}
    chunk = json.loads(command_frame("firmware/chunk/j1/0", b"{}", "c2"))
    assert base64.b64decode(chunk["payload_base64"]) == b"{}" and "payload" not in chunk
    empty = json.loads(command_frame("firmware/chunk/j1/9", b""))
    assert empty == {"topic": "firmware/chunk/j1/9", "payload_base64": ""}
    assert json.loads(command_frame("firmware/cancel", b"\xff\x00"))["payload_base64"] == "/wA="


def test_answers():
    """Acks, duplicate acks and errors, as documented."""
    assert json.loads(ack_frame("m1")) == {"ack": "m1"}
    assert json.loads(ack_frame(5, duplicate=True)) == {"ack": 5, "duplicate": True}
    assert json.loads(error_frame("why", None)) == {"error": "why", "id": None}


def test_the_token_bucket_allows_a_burst_then_the_rate():
    """burst at once, then `rate` a second."""
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] = 0.1
    assert [bucket.take(), bucket.take()] == [True, False]
    now[0] = 100.0
    assert sum(bucket.take() for _ in range(10)) == 3
