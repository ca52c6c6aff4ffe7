"""The device WebSocket's frames and limits (pure functions, no Flask, no network).

A device sends JSON text frames: a message `{"topic", "payload" | "payload_base64", "id"}`
(the topic below its id) or the ack of a command `{"ack": id}`. carweb answers a message
with `{"ack": id}` once it is stored, or `{"error": why, "id": id}`; it sends commands as
`{"topic", "payload" | "payload_base64", "id"}`. docs/device-websocket.md is the contract.
"""

import base64
import binascii
import json
import time
from dataclasses import dataclass

from carweb.bridge.documents import MAX_MSG_ID_LENGTH
from carweb.bridge.topics import direction_of

MAX_TOPIC_LENGTH = 1024
# Close codes (docs/device-websocket.md), shared by carweb's side and the simulated cars'.
CLOSE_POLICY = 1008
CLOSE_SERVER_ERROR = 1011
CLOSE_RESTART = 1012
CLOSE_REPLACED = 4001
_FORBIDDEN_IN_TOPIC = set("+#\x00")


class FrameError(ValueError):
    """A frame carweb refuses; `id` is the refused message's id when it could be read."""

    def __init__(self, reason, frame_id=None):
        super().__init__(reason)
        self.id = frame_id


@dataclass(frozen=True)
class DeviceMessage:
    """A message a device sent: to be published under its id, and acked once stored."""

    id: object  # as the device sent it (string or integer), echoed in the ack
    msg_id: str  # what is stored and deduplicated on
    topic: str  # below the device id
    payload: bytes
    retain: bool = False


@dataclass(frozen=True)
class CommandAck:
    """A device's acknowledgement of a command frame."""

    id: str


def parse_frame(data):
    """A DeviceMessage or a CommandAck from one frame; FrameError saying why it is refused."""
    if isinstance(data, (bytes, bytearray)):
        raise FrameError("frames are JSON text, not binary")
    try:
        frame = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise FrameError(f"not JSON: {exc}"[:200]) from None
    if not isinstance(frame, dict):
        raise FrameError("a frame is a JSON object")
    if "ack" in frame and "topic" not in frame:
        return CommandAck(str(frame["ack"]))
    frame_id = frame.get("id")
    msg_id = message_id(frame_id)
    topic, payload = message_topic(frame, frame_id), message_payload(frame, frame_id)
    return DeviceMessage(frame_id, msg_id, topic, payload, retain=frame.get("retain") is True)


def message_id(frame_id):
    """The stored message id of a frame's `id`: a non-empty string or an integer."""
    if isinstance(frame_id, bool) or not isinstance(frame_id, (str, int)) or frame_id == "":
        raise FrameError("every message needs an id: a non-empty string or an integer", frame_id)
    text = str(frame_id)
    if len(text) > MAX_MSG_ID_LENGTH:
        raise FrameError(f"an id has at most {MAX_MSG_ID_LENGTH} characters", frame_id)
    if not _utf8(text):
        raise FrameError("an id must be valid Unicode (no lone surrogate escapes)", frame_id)
    return text


def message_topic(frame, frame_id):
    """The topic below the device id; devices may not use wildcards or carweb's command topics."""
    topic = frame.get("topic")
    if not isinstance(topic, str) or not topic:
        raise FrameError('a message needs a topic (below the device id, such as "telemetry")', frame_id)
    if len(topic) > MAX_TOPIC_LENGTH or _FORBIDDEN_IN_TOPIC & set(topic):
        raise FrameError(f"a topic has at most {MAX_TOPIC_LENGTH} characters and no + # or NUL", frame_id)
    if not _utf8(topic):
        raise FrameError("a topic must be valid Unicode (no lone surrogate escapes)", frame_id)
    if direction_of(f"device/{topic}") == "out":
        raise FrameError(f"{topic} is a topic carweb sends to devices", frame_id)
    return topic


def _utf8(text):
    """Whether a string has a UTF-8 form (JSON's \\ud800 escapes give strings that do not)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def message_payload(frame, frame_id):
    """The payload's bytes: a string as its UTF-8 text, other JSON as JSON text, or base64 bytes."""
    if "payload_base64" in frame:
        if "payload" in frame:
            raise FrameError("send payload or payload_base64, not both", frame_id)
        try:
            return base64.b64decode(frame["payload_base64"], validate=True)
        except (TypeError, ValueError, binascii.Error):
            raise FrameError("payload_base64 is not base64", frame_id) from None
    payload = frame.get("payload")
    if isinstance(payload, str):
        # A lone surrogate escape has no UTF-8: its bytes are kept as they are (stored as binary).
        return payload.encode("utf-8", "surrogatepass")
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: keep it as the escape the device sent
        return json.dumps(payload, separators=(",", ":")).encode("ascii")


def command_frame(topic, payload, frame_id=None):
    """The frame of a command: JSON payloads as JSON, chunks and other bytes as base64."""
    frame = {"topic": topic}
    try:
        if "/chunk/" in topic:
            raise ValueError("chunks are bytes")
        frame["payload"] = json.loads(payload.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError is one
        frame["payload_base64"] = base64.b64encode(payload).decode("ascii")
    if frame_id is not None:
        frame["id"] = frame_id
    return json.dumps(frame, separators=(",", ":"))


def ack_frame(frame_id, duplicate=False):
    """The answer to a stored message (`duplicate`: it had been stored before)."""
    frame = {"ack": frame_id, "duplicate": True} if duplicate else {"ack": frame_id}
    return json.dumps(frame, separators=(",", ":"))


def ready_frame(device_id, limits):
    """The first frame of a connection: whose it is and the limits it is held to."""
    return json.dumps({"ready": {"device": device_id, "limits": limits}}, separators=(",", ":"))


def error_frame(reason, frame_id=None):
    """The answer to a refused frame."""
    return json.dumps({"error": reason, "id": frame_id}, separators=(",", ":"))


class TokenBucket:
    """`rate` tokens a second up to `burst`; `take` says whether one was there."""

    def __init__(self, rate, burst, clock=time.monotonic):
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self.updated = clock()

    def take(self):
        """Take a token if there is one."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
