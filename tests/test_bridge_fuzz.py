"""Generated topics and payloads never stop the bridge (hypothesis)."""

import contextlib
import json
import uuid

import bson
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carweb.bridge.documents import document_or_none
from carweb.devstack import device_client
from tests.conftest import wait_until

pytestmark = pytest.mark.faults
MAX_PAYLOAD = 256 * 1024

level = st.one_of(
    # Control characters and non-characters are refused by the broker itself; they never reach us.
    st.text(
        st.characters(blacklist_categories=("Cc", "Cs", "Cn", "Co"), blacklist_characters="+#"), max_size=20
    ),
    st.sampled_from(["", "$SYS", "firmware", "status", "ü", "x" * 200]),
)
topics = st.lists(level, min_size=1, max_size=12).map("/".join).filter(lambda t: 0 < len(t.encode()) < 65535)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
payloads = st.one_of(
    st.binary(max_size=2048),
    st.text(max_size=200).map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.sampled_from(
        [b"{", b"[" * 5000 + b"]" * 5000, b'{"$set": 1, "a.b": 2}', b"9" * 400, b"\xff" * 300_000]
    ),
)


class Message:
    """The fields of a paho message the bridge reads."""

    def __init__(self, topic, payload):
        self.topic, self.payload, self.qos, self.retain, self.dup, self.properties = (
            topic,
            payload,
            1,
            False,
            False,
            None,
        )


any_topics = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)


@settings(max_examples=300, deadline=None)
@given(topic=topics | any_topics, payload=payloads)
def test_every_generated_message_becomes_a_storable_document_or_is_dropped(topic, payload):
    """A document is either None (dropped, counted) or encodes as BSON with the exact bytes."""
    doc = document_or_none(Message(topic, payload), None, MAX_PAYLOAD)
    if doc is None:
        return
    encoded = bson.decode(bson.encode(doc))
    assert encoded["payload"] == payload[:MAX_PAYLOAD]
    assert encoded["truncated"] == (len(payload) > MAX_PAYLOAD)


def connected_client(services):
    """A fresh publishing client (the broker may drop one that sent something it refuses)."""
    return device_client(services.mqtt_port, "fuzz")


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(st.tuples(topics, payloads), min_size=1, max_size=25))
def test_generated_messages_through_the_broker_never_stop_the_bridge(live_server, services, batch):
    """After any burst of odd messages, the bridge still stores the next one and is healthy."""
    client = connected_client(services)
    for topic, payload in batch:
        if not client.is_connected():  # Mosquitto drops clients that send e.g. control characters
            client.loop_stop()
            client = connected_client(services)
        with contextlib.suppress(RuntimeError):  # refused by the broker: nothing reached the bridge
            client.publish(topic, payload, qos=1).wait_for_publish(2)
    client.disconnect()
    client.loop_stop()
    sentinel = str(uuid.uuid4())
    client = connected_client(services)
    client.publish(f"{sentinel}/after", b"still alive", qos=1).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()
    wait_until(lambda: live_server.db().messages.find_one({"device_id": sentinel}), timeout=20)
    health = requests.get(f"{live_server.url}/healthz", timeout=5).json()
    assert health["bridge"] == "running" and health["mqtt"] == "connected"
