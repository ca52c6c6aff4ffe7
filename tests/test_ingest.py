"""The batch writer against a real database (no broker needed)."""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from carweb import metrics
from carweb.bridge.documents import build_documents
from carweb.bridge.ingest import ingest_batch
from carweb.models import Device, Message

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def arrival(topic, payload, seconds=0, qos=1, retain=False, dup=False, msg_id=None):
    """A (paho-like message, arrival time) pair; `msg_id` becomes an MQTT 5 user property."""
    properties = SimpleNamespace(UserProperty=[("msg-id", msg_id)]) if msg_id else None
    msg = SimpleNamespace(
        topic=topic, payload=payload, qos=qos, retain=retain, dup=dup, properties=properties
    )
    return msg, T0 + timedelta(seconds=seconds)


def store(*arrivals, max_payload=1024):
    """Build and ingest one batch."""
    return ingest_batch(build_documents(list(arrivals), max_payload))


def test_message_from_unknown_device_registers_it(app):
    """The first message creates the device with its counters."""
    result = store(arrival("car-1/telemetry", b'{"speed": 10}'))
    device = Device.objects.get(device_id="car-1")
    assert device.message_count == 1 and device.online is True
    assert device.created_at == T0 and device.last_seen_at == T0
    assert [d["device_id"] for d in result.devices] == ["car-1"]
    message = Message.objects.get(device_id="car-1")
    assert message.topic == "car-1/telemetry" and message.data == {"speed": 10} and message.direction == "in"


def test_batch_counts_per_device_and_keeps_first_and_last_seen(app):
    """One bulk upsert per device adds the batch's count; later batches add theirs."""
    store(arrival("a/t", b"1", 0), arrival("b/t", b"2", 1), arrival("a/t", b"3", 2))
    store(arrival("a/t", b"4", 5))
    a = Device.objects.get(device_id="a")
    assert a.message_count == 3 and a.created_at == T0 and a.last_seen_at == T0 + timedelta(seconds=5)
    assert Device.objects.get(device_id="b").message_count == 1
    assert Message.objects(device_id="a").count() == 3


def test_status_topic_sets_online_state(app):
    """`<id>/status` payloads `offline`/`online` set the device's state."""
    store(arrival("c/telemetry", b"{}", 0), arrival("c/status", b"offline", 1, retain=True))
    assert Device.objects.get(device_id="c").online is False
    store(arrival("c/status", b"online", 2, retain=True))
    assert Device.objects.get(device_id="c").online is True


def test_outbound_messages_are_stored_but_do_not_count_as_device_activity(app):
    """Commands carweb published come back through +/#: stored as `out`, no counter change."""
    store(arrival("d/telemetry", b"{}", 0))
    store(arrival("d/firmware/update", b'{"job": "j"}', 9))
    device = Device.objects.get(device_id="d")
    assert device.message_count == 1 and device.last_seen_at == T0
    assert Message.objects.get(topic="d/firmware/update").direction == "out"


def test_bad_topics_are_dropped_and_counted(app):
    """Empty or overlong first levels are dropped, the rest of the batch is stored."""
    before = metrics.dropped.labels(reason="empty device id")._value.get()
    result = store(arrival("/nothing", b"x"), arrival("e/ok", b"y"), arrival("z" * 500 + "/t", b"w"))
    assert [d["topic"] for d in result.stored] == ["e/ok"]
    assert metrics.dropped.labels(reason="empty device id")._value.get() == before + 1
    assert Message.objects.count() == 1


def test_oversized_payload_is_stored_truncated(app):
    """A payload over MQTT_MAX_PAYLOAD is cut and marked."""
    store(arrival("f/blob", b"\x01" * 5000), max_payload=1000)
    message = Message.objects.get(device_id="f")
    assert message.truncated is True and message.size == 5000 and len(message.payload) == 1000


def test_writing_the_same_batch_again_stores_nothing_twice(app):
    """A batch retried after an unknown outcome (same _ids) is not duplicated."""
    docs = build_documents([arrival("g/t", b"1"), arrival("g/t", b"2")], 1024)
    ingest_batch(docs[:1])
    result = ingest_batch(docs)
    assert len(result.stored) == 2
    assert Message.objects(device_id="g").count() == 2
    assert Device.objects.get(device_id="g").message_count == 3  # batches [g1] and [g1, g2]


def test_redelivery_with_json_msg_id_is_stored_once(app):
    """The same `msg_id` from the same device, in another batch or the same one, is skipped."""
    first = store(arrival("h/t", b'{"msg_id": "m-1", "v": 1}'))
    again = store(arrival("h/t", b'{"msg_id": "m-1", "v": 1}', 1), arrival("h/t", b'{"msg_id": "m-2"}', 2))
    twice = store(arrival("h/t", b'{"msg_id": "m-3"}', 3), arrival("h/t", b'{"msg_id": "m-3"}', 3))
    assert len(first.stored) == 1 and first.duplicates == 0
    assert [d["msg_id"] for d in again.stored] == ["m-2"] and again.duplicates == 1
    assert len(twice.stored) == 1 and twice.duplicates == 1
    assert Message.objects(device_id="h").count() == 3
    assert Device.objects.get(device_id="h").message_count == 3


def test_same_msg_id_from_two_devices_is_two_messages(app):
    """Message ids are per device."""
    store(arrival("i1/t", b'{"msg_id": 7}'), arrival("i2/t", b'{"msg_id": 7}'))
    assert Message.objects(msg_id="7").count() == 2


def test_mqtt5_user_property_msg_id_wins_over_json(app):
    """The `msg-id` user property is the message id when present."""
    store(arrival("j/t", b'{"msg_id": "json"}', msg_id="prop"))
    result = store(arrival("j/t", b'{"msg_id": "other"}', 1, msg_id="prop"))
    assert result.duplicates == 1 and Message.objects.get(device_id="j").msg_id == "prop"


def test_dup_flag_without_id_skips_a_copy_stored_in_the_last_minute(app):
    """A redelivery (DUP set) matching device, topic and payload of a recent message is skipped."""
    store(arrival("k/t", b"same", 0))
    skipped = store(arrival("k/t", b"same", 5, dup=True))
    different = store(arrival("k/t", b"other", 6, dup=True))
    late = store(arrival("k/t", b"same", 200, dup=True))
    assert skipped.duplicates == 1 and not skipped.stored
    assert len(different.stored) == 1 and len(late.stored) == 1
    assert Message.objects(device_id="k").count() == 3


def test_messages_without_ids_are_never_merged(app):
    """Without a msg_id and without DUP, identical payloads are separate messages."""
    store(arrival("l/t", b"tick"), arrival("l/t", b"tick"))
    store(arrival("l/t", b"tick", 1))
    assert Message.objects(device_id="l").count() == 3


def test_retried_batch_does_not_count_its_messages_twice(app):
    """If the device update of a batch is applied and then retried, the counter moves once."""
    docs = build_documents([arrival("m/t", b"1"), arrival("m/t", b"2", 1)], 1024)
    ingest_batch(docs)
    ingest_batch(docs)  # the same batch again: same _ids, same marker
    assert Device.objects.get(device_id="m").message_count == 2
    ingest_batch(build_documents([arrival("m/t", b"3", 2)], 1024))
    assert Device.objects.get(device_id="m").message_count == 3
