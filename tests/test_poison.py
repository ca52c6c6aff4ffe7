"""No message content can stop, stall or restart the bridge (hypothesis, through the real write path).

Payloads are generated as devices can send them: any bytes, and JSON text whose strings
and keys hold any escape (lone surrogates, NUL, noncharacters), numbers of any size,
nesting of any depth and huge keys. Each batch goes through the bridge's own decode,
numbering and write steps into the test database beside a good message, which must be
stored; every generated message is stored (as decoded, as text, or as its exact bytes)
or, if even its bytes cannot be, counted as dropped.
"""

import json
import threading
import time
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

import bson
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carweb import metrics
from carweb.bridge.documents import document_or_none
from carweb.devstack import device_client
from carweb.models import Message
from tests.conftest import wait_until
from tests.ingest_support import MAX_PAYLOAD, ingest

plain_char = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters='"\\')
escape = st.one_of(
    st.integers(0, 0xFFFF).map(lambda unit: f"\\u{unit:04x}"),  # lone surrogates and NUL included
    st.sampled_from(["\\ud800", "\\udfff", "\\u0000", "\\uffff", "\\ufdd0", "\\ud83d\\ude00", '\\"', "\\\\"]),
)
json_strings = st.lists(plain_char | escape, max_size=12).map(lambda parts: '"' + "".join(parts) + '"')
json_numbers = st.one_of(
    st.integers().map(str),
    st.integers(min_value=19, max_value=6000).map(lambda digits: "9" * digits),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["1e400", "-1e400", "1E-400", "NaN", "Infinity", "-0", "2e308"]),
)
json_keys = json_strings | st.sampled_from(['"$set"', '"a.b"', '"\\u0000k"', '""', '"' + "k" * 70_000 + '"'])
json_texts = st.recursive(
    json_strings | json_numbers | st.sampled_from(["true", "false", "null"]),
    lambda inner: (
        st.lists(inner, max_size=4).map(lambda items: "[" + ",".join(items) + "]")
        | st.lists(st.tuples(json_keys, inner), max_size=4).map(
            lambda pairs: "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"
        )
    ),
    max_leaves=12,
)
deep_nesting = st.integers(1, 5000).flatmap(
    lambda depth: st.sampled_from(["[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth])
)
payloads = st.one_of(
    json_texts.map(str.encode),
    deep_nesting.map(str.encode),
    st.binary(max_size=512),
    st.sampled_from([b"\xff\xfe\x80", b"\x00", b"", b"\xed\xa0\x80", bytes(300_000)]),
)


def paho_message(topic, payload):
    """The fields of a paho message the bridge reads."""
    return SimpleNamespace(topic=topic, payload=payload, qos=1, retain=False, dup=False, properties=None)


def dropped_total():
    """Messages counted as not stored, whatever the reason."""
    return sum(
        sample.value for sample in metrics.dropped.collect()[0].samples if sample.name.endswith("_total")
    )


@settings(max_examples=400, deadline=None)
@given(payload=payloads)
def test_every_payload_becomes_a_document_the_driver_can_encode(payload):
    """Decoding never raises and never keeps a value BSON refuses; the bytes are kept exactly."""
    doc = document_or_none(paho_message("car/t", payload), datetime.now(UTC), MAX_PAYLOAD)
    encoded = bson.decode(bson.encode(doc))
    assert encoded["payload"] == payload[:MAX_PAYLOAD]
    assert ("data" in encoded) or encoded["kind"] != "json" or "raw_reason" in encoded


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(payloads, min_size=1, max_size=6))
def test_any_batch_is_stored_beside_a_good_message(app, batch):
    """Through the bridge's own steps: the good message and every generated one are stored, in order."""
    device, good = f"poison-{uuid.uuid4().hex[:8]}", f"good-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    arrivals = [paho_message(f"{device}/t", payload) for payload in batch]
    arrivals.append(paho_message(f"{good}/telemetry", b'{"speed": 1}'))
    docs = [document_or_none(msg, now, MAX_PAYLOAD) for msg in arrivals]
    dropped = dropped_total()
    stored = ingest(docs)
    assert Message.objects(device_id=good).count() == 1
    assert len(stored) == len(arrivals) and dropped_total() == dropped  # a valid topic: even raw bytes fit
    kept = Message._get_collection().find({"device_id": device}, sort=[("seq", 1)])
    assert [bytes(m["payload"]) for m in kept] == [payload[:MAX_PAYLOAD] for payload in batch]


POISON = [
    b'{"x": "\\ud800"}',
    b'{"\\udc00": 1}',
    b"\xff\xfe\x80 not utf-8",
    b"[" * 3000 + b"]" * 3000,
    b'{"n": ' + b"9" * 5000 + b"}",
    bytes(600_000),  # over MQTT_MAX_PAYLOAD: stored cut
    b'{"$where": "1", "a.b": 2}',
]


def flood(port, device_id, stop):
    """Publish poison on `device_id` as fast as the broker takes it until `stop` is set; how many."""
    client, sent = device_client(port, "poison"), 0
    try:
        while not stop.is_set():
            client.publish(f"{device_id}/telemetry", POISON[sent % len(POISON)], qos=1).wait_for_publish(5)
            sent += 1
    finally:
        client.disconnect()
        client.loop_stop()
    return sent


def test_a_device_flooding_poison_does_not_hold_up_another_devices_messages(live_server, services, publisher):
    """Oversized and undecodable messages in a flood: the other device's 50 are stored within seconds."""
    poisoner, healthy = f"poison-{uuid.uuid4().hex[:8]}", f"healthy-{uuid.uuid4().hex[:8]}"
    stop, result = threading.Event(), {}
    flooder = threading.Thread(target=lambda: result.update(sent=flood(services.mqtt_port, poisoner, stop)))
    flooder.start()
    messages = live_server.db().messages
    try:
        wait_until(lambda: messages.count_documents({"device_id": poisoner}) >= 20, timeout=30)
        started = time.monotonic()
        for n in range(50):
            publisher.publish(f"{healthy}/telemetry", json.dumps({"n": n}), qos=1).wait_for_publish(5)
            assert requests.get(f"{live_server.url}/healthz", timeout=5).status_code == 200
        wait_until(lambda: messages.count_documents({"device_id": healthy}) == 50, timeout=10)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        flooder.join(30)
    wait_until(lambda: messages.count_documents({"device_id": poisoner}) == result["sent"], timeout=60)
    assert elapsed < 15
    kinds = {m["kind"] for m in messages.find({"device_id": poisoner}, {"kind": 1})}
    assert {"json", "binary"} <= kinds
    assert messages.find_one({"device_id": poisoner, "size": 600_000})["truncated"] is True
    health = requests.get(f"{live_server.url}/healthz", timeout=5).json()
    assert health["bridge"] == "running" and health["mqtt"] == "connected"
