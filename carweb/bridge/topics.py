"""Topic rules of the contract: the first level is the device id (pure functions)."""

import re

MAX_DEVICE_ID_LENGTH = 128
SUBSCRIPTION = "+/#"


def subscription(shared_group=None):
    """What a bridge subscribes to: every device topic, through a shared subscription when bridges split the stream."""
    return f"$share/{shared_group}/{SUBSCRIPTION}" if shared_group else SUBSCRIPTION


# Topics carweb publishes to devices: stored as outbound, never treated as device input.
_OUTBOUND = re.compile(r"^[^/]+/firmware/(update|cancel|chunk/[^/]+/\d+)$")
_CHUNK = re.compile(r"^[^/]+/firmware/chunk/[^/]+/\d+$")


class TopicError(ValueError):
    """A topic that cannot be stored; the message says why."""


def device_id_of(topic):
    """Return the device id of a topic, or raise TopicError for an unusable one."""
    first = topic.split("/", 1)[0]
    if not first:
        raise TopicError("empty device id")
    if len(first) > MAX_DEVICE_ID_LENGTH:
        raise TopicError("device id too long")
    return first


def check_device_id(device_id):
    """Refuse (TopicError) an id no device could publish under: empty, too long, or holding `/ + # $`, spaces or controls."""
    if not isinstance(device_id, str):
        raise TopicError("a device id is required")
    device_id_of(device_id)  # empty or too long
    if any(ch in "/+#" or ch.isspace() or not ch.isprintable() for ch in device_id) or device_id[0] == "$":
        raise TopicError(
            "a device id is the first level of its topics: no /, +, #, spaces, control characters or leading $"
        )
    return device_id


def direction_of(topic):
    """'out' for topics carweb publishes to devices, 'in' for everything devices send."""
    return "out" if _OUTBOUND.match(topic) else "in"


def is_chunk_topic(topic):
    """Tell whether the topic is one of carweb's answers to a chunk request (`<id>/firmware/chunk/<job>/<n>`)."""
    return _CHUNK.match(topic) is not None


def is_status_topic(topic):
    """Tell whether the topic is a device's retained `<id>/status` (its last will)."""
    parts = topic.split("/")
    return len(parts) == 2 and parts[1] == "status"


def topic_filter_regex(topic_filter):
    """Turn an MQTT topic filter (`+`, `#` wildcards) into an anchored regular expression."""
    parts = []
    levels = topic_filter.split("/")
    for position, level in enumerate(levels):
        if level == "#" and position == len(levels) - 1:
            parts.append("(/.*)?" if position else ".*")
            break
        prefix = "/" if position else ""
        parts.append(prefix + ("[^/]*" if level == "+" else re.escape(level)))
    return "^" + "".join(parts) + "$"
