"""Topic rules of the contract."""

import re

import pytest

from carweb.bridge.topics import (
    MAX_DEVICE_ID_LENGTH,
    TopicError,
    device_id_of,
    direction_of,
    is_status_topic,
    topic_filter_regex,
)


def test_device_id_is_the_first_topic_level():
    """`<id>/anything/deeper` belongs to `<id>`."""
    assert (
        device_id_of("1b3d0160-a36c-44ba-b069-a662a8befeff/message") == "1b3d0160-a36c-44ba-b069-a662a8befeff"
    )
    assert device_id_of("car/a/b/c") == "car"
    assert device_id_of("lonely") == "lonely"


@pytest.mark.parametrize("topic", ["/message", "", "x" * (MAX_DEVICE_ID_LENGTH + 1) + "/m"])
def test_empty_or_overlong_first_level_is_refused(topic):
    """Topics without a usable device id raise TopicError."""
    with pytest.raises(TopicError):
        device_id_of(topic)


@pytest.mark.parametrize(
    ("topic", "direction"),
    [
        ("d/firmware/update", "out"),
        ("d/firmware/cancel", "out"),
        ("d/firmware/chunk/job1/17", "out"),
        ("d/firmware/status", "in"),
        ("d/firmware/chunk/request", "in"),
        ("d/telemetry", "in"),
        ("d/firmware/update/extra", "in"),
    ],
)
def test_server_to_device_topics_are_outbound(topic, direction):
    """Only the contract's server -> device topics are outbound."""
    assert direction_of(topic) == direction


def test_status_topic_is_second_level_status_only():
    """`<id>/status` is the last-will topic; deeper ones are not."""
    assert is_status_topic("d/status")
    assert not is_status_topic("d/status/x") and not is_status_topic("d/firmware/status")


@pytest.mark.parametrize(
    ("topic_filter", "matching", "not_matching"),
    [
        ("d/telemetry", ["d/telemetry"], ["d/telemetry/x", "d/telemetryx"]),
        ("d/+/status", ["d/firmware/status", "d//status"], ["d/status", "d/a/b/status"]),
        ("d/#", ["d", "d/a", "d/a/b"], ["dd/a"]),
        ("#", ["anything/at/all"], []),
        ("d/a.b", ["d/a.b"], ["d/aXb"]),
    ],
)
def test_topic_filter_follows_mqtt_wildcards(topic_filter, matching, not_matching):
    """`+` is one level, `#` is any rest, everything else is literal."""
    pattern = re.compile(topic_filter_regex(topic_filter))
    for topic in matching:
        assert pattern.match(topic), topic
    for topic in not_matching:
        assert not pattern.match(topic), topic


def test_message_id_comes_from_user_property_or_json_field():
    """`msg-id` user property first, then a non-empty string or integer `msg_id`."""
    from types import SimpleNamespace

    from carweb.bridge.documents import message_id_of

    assert (
        message_id_of(SimpleNamespace(UserProperty=[("a", "b"), ("msg-id", "p1")]), {"msg_id": "j"}) == "p1"
    )
    assert message_id_of(None, {"msg_id": 42}) == "42"
    assert message_id_of(None, {"msg_id": "x" * 500}) == "x" * 200
    for data in ({"msg_id": ""}, {"msg_id": True}, {"msg_id": None}, {"msg_id": [1]}, [1, 2], "msg_id", None):
        assert message_id_of(None, data) is None
