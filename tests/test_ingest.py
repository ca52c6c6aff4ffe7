"""The bridge's database steps against a real database (no broker needed): numbering, storing, counting."""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from carweb import metrics
from carweb.bridge.book import DeviceBook
from carweb.bridge.documents import build_documents
from carweb.bridge.flush import flush_devices
from carweb.bridge.ingest import messages_collection, prepare_batch, store_messages
from carweb.models import Device, Message
from tests.ingest_support import ingest

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def arrival(topic, payload, seconds=0, qos=1, retain=False, dup=False, msg_id=None):
    """A (paho-like message, arrival time) pair; `msg_id` becomes an MQTT 5 user property."""
    properties = SimpleNamespace(UserProperty=[("msg-id", msg_id)]) if msg_id else None
    msg = SimpleNamespace(
        topic=topic, payload=payload, qos=qos, retain=retain, dup=dup, properties=properties
    )
    return msg, T0 + timedelta(seconds=seconds)


def store(*arrivals, max_payload=1024, book=None):
    """Build one batch and take it through the bridge's steps; the stored documents."""
    return ingest(build_documents(list(arrivals), max_payload), book)


def numbers(device_id):
    """The stored message numbers of a device, in arrival order."""
    return [m.seq for m in Message.objects(device_id=device_id).order_by("seq")]


def test_message_from_unknown_device_registers_it(app):
    """The first message creates the device with its counters; the message is number 1."""
    stored = store(arrival("car-1/telemetry", b'{"speed": 10}'))
    device = Device.objects.get(device_id="car-1")
    assert device.message_count == 1 and device.online is True and device.last_seq == 1
    assert device.created_at == T0 and device.last_seen_at == T0 and device.seen_seq >= 1
    assert [d["seq"] for d in stored] == [1]
    message = Message.objects.get(device_id="car-1")
    assert message.topic == "car-1/telemetry" and message.data == {"speed": 10} and message.direction == "in"


def test_batches_number_each_devices_messages_in_arrival_order(app):
    """Numbers are per device, 1, 2, 3... across batches and across a restarted bridge."""
    store(arrival("a/t", b"1", 0), arrival("b/t", b"2", 1), arrival("a/t", b"3", 2))
    store(arrival("a/t", b"4", 5))
    a = Device.objects.get(device_id="a")
    assert a.message_count == 3 and a.last_seq == 3 and a.created_at == T0
    assert a.last_seen_at == T0 + timedelta(seconds=5)
    assert numbers("a") == [1, 2, 3] and numbers("b") == [1]
    assert [m.text for m in Message.objects(device_id="a").order_by("seq")] == ["1", "3", "4"]


def test_status_topic_sets_online_state(app):
    """`<id>/status` payloads `offline`/`online` set the device's state."""
    store(arrival("c/telemetry", b"{}", 0), arrival("c/status", b"offline", 1, retain=True))
    assert Device.objects.get(device_id="c").online is False
    store(arrival("c/status", b"online", 2, retain=True))
    assert Device.objects.get(device_id="c").online is True


def test_outbound_messages_are_numbered_but_do_not_count_as_device_activity(app):
    """Commands carweb published come back through +/#: stored as `out`, in the history, not counted."""
    store(arrival("d/telemetry", b"{}", 0))
    store(arrival("d/firmware/update", b'{"job": "j"}', 9))
    device = Device.objects.get(device_id="d")
    assert device.message_count == 1 and device.last_seen_at == T0 and device.last_seq == 2
    assert Message.objects.get(topic="d/firmware/update").direction == "out"


def test_bad_topics_are_dropped_and_counted(app):
    """Empty or overlong first levels are dropped, the rest of the batch is stored."""
    before = metrics.dropped.labels(reason="empty device id")._value.get()
    stored = store(arrival("/nothing", b"x"), arrival("e/ok", b"y"), arrival("z" * 500 + "/t", b"w"))
    assert [d["topic"] for d in stored] == ["e/ok"]
    assert metrics.dropped.labels(reason="empty device id")._value.get() == before + 1
    assert Message.objects.count() == 1


def test_oversized_payload_is_stored_truncated(app):
    """A payload over MQTT_MAX_PAYLOAD is cut and marked."""
    store(arrival("f/blob", b"\x01" * 5000), max_payload=1000)
    message = Message.objects.get(device_id="f")
    assert message.truncated is True and message.size == 5000 and len(message.payload) == 1000


def test_firmware_chunks_carweb_sent_are_kept_as_size_only(app):
    """A 64 KiB answer to a chunk request is in the history by topic and size, not its bytes."""
    store(arrival("fc/firmware/chunk/65a000000000000000000000/3", b"\x07" * 65536))
    message = Message.objects.get(device_id="fc")
    assert message.direction == "out" and message.payload == b"" and message.size == 65536
    assert "firmware chunk" in message.raw_reason


def test_writing_the_same_batch_again_stores_nothing_twice_and_keeps_its_numbers(app):
    """A batch retried after an unknown outcome (same _ids, same numbers) is not duplicated."""
    book = DeviceBook()
    docs = prepare_batch(book, build_documents([arrival("g/t", b"1"), arrival("g/t", b"2")], 1024))
    store_messages(book, docs[:1])
    stored = store_messages(book, docs)  # the writer's retry: the first one is stored already
    assert [d["seq"] for d in stored] == [1, 2] and numbers("g") == [1, 2]


def test_flushing_the_same_counts_again_changes_nothing(app):
    """Device writes only let counters grow: a repeated or late flush cannot count twice."""
    book = DeviceBook()
    store(arrival("m/t", b"1"), arrival("m/t", b"2", 1), book=book)
    book._dirty.add("m")  # as if the flush's outcome had been unknown
    flush_devices(book)
    assert Device.objects.get(device_id="m").message_count == 2
    store(arrival("m/t", b"3", 2), book=book)
    assert Device.objects.get(device_id="m").message_count == 3


def test_redelivery_with_json_msg_id_is_stored_once(app):
    """The same `msg_id` from the same device, in another batch or the same one, is stored once."""
    first = store(arrival("h/t", b'{"msg_id": "m-1", "v": 1}'))
    again = store(arrival("h/t", b'{"msg_id": "m-1", "v": 1}', 1), arrival("h/t", b'{"msg_id": "m-2"}', 2))
    twice = store(arrival("h/t", b'{"msg_id": "m-3"}', 3), arrival("h/t", b'{"msg_id": "m-3"}', 3))
    assert len(first) == 1 and [d["msg_id"] for d in again] == ["m-2"] and len(twice) == 1
    assert Message.objects(device_id="h").count() == 3
    device = Device.objects.get(device_id="h")
    assert device.message_count == 3 and device.last_seq == max(numbers("h"))


def test_flagged_redelivery_with_msg_id_takes_no_number(app):
    """A DUP-flagged copy of a stored message is left out before numbering: no gap in the history."""
    store(arrival("n/t", b'{"msg_id": "a"}'))
    store(arrival("n/t", b'{"msg_id": "a"}', 1, dup=True), arrival("n/t", b'{"msg_id": "b"}', 2))
    assert numbers("n") == [1, 2]


def test_same_msg_id_from_two_devices_is_two_messages(app):
    """Message ids are per device."""
    store(arrival("i1/t", b'{"msg_id": 7}'), arrival("i2/t", b'{"msg_id": 7}'))
    assert Message.objects(msg_id="7").count() == 2


def test_mqtt5_user_property_msg_id_wins_over_json(app):
    """The `msg-id` user property is the message id when present."""
    store(arrival("j/t", b'{"msg_id": "json"}', msg_id="prop"))
    assert store(arrival("j/t", b'{"msg_id": "other"}', 1, msg_id="prop")) == []
    assert Message.objects.get(device_id="j").msg_id == "prop"


def test_dup_flag_without_id_skips_a_copy_among_the_newest_messages(app):
    """A redelivery (DUP set) matching device, topic and payload of a recent message is skipped."""
    store(arrival("k/t", b"same", 0))
    assert store(arrival("k/t", b"same", 5, dup=True)) == []
    assert len(store(arrival("k/t", b"other", 6, dup=True))) == 1
    assert numbers("k") == [1, 2]


def test_messages_without_ids_are_never_merged(app):
    """Without a msg_id and without DUP, identical payloads are separate messages."""
    store(arrival("l/t", b"tick"), arrival("l/t", b"tick"))
    store(arrival("l/t", b"tick", 1))
    assert numbers("l") == [1, 2, 3]


def test_numbers_taken_elsewhere_are_skipped_not_reused(app):
    """A book that lags the database (another writer, a lost flush) numbers above what is stored."""
    store(arrival("o/t", b"1"), arrival("o/t", b"2", 1))
    stale = DeviceBook()
    docs = prepare_batch(stale, build_documents([arrival("o/t", b"3", 2)], 1024))
    Device.objects(device_id="o").update(set__last_seq=0)  # what the stale book read
    stale.get("o").next_seq = stale.get("o").recorded_seq = 0
    docs[0]["seq"] = 1
    stored = store_messages(stale, docs)
    assert [d["seq"] for d in stored] == [3] and numbers("o") == [1, 2, 3]


def test_a_document_the_driver_cannot_encode_is_stored_raw_beside_the_rest(app):
    """Whatever a decoded form holds, the batch is stored: the refused one as its exact bytes, with why."""
    book = DeviceBook()
    docs = prepare_batch(book, build_documents([arrival("p/t", b"good"), arrival("p/t", b"bad", 1)], 1024))
    docs[1]["data"] = {"x": "\ud800"}  # no BSON encoder takes a lone surrogate
    stored = store_messages(book, docs)
    assert [d["seq"] for d in stored] == [1, 2]
    raw = messages_collection().find_one({"device_id": "p", "seq": 2})
    assert raw["payload"] == b"bad" and raw["kind"] == "binary" and "data" not in raw
    assert "cannot be encoded" in raw["raw_reason"]


def test_a_message_that_cannot_be_stored_at_all_is_counted_and_the_rest_stored(app):
    """Neither the decoded form nor the raw bytes can be written: dropped, counted, no exception."""
    book = DeviceBook()
    docs = prepare_batch(book, build_documents([arrival("q/t", b"ok"), arrival("q/t", b"x", 1)], 1024))
    docs[1]["topic"] = "q/\udc80"  # even the raw document carries the topic
    before = metrics.dropped.labels(reason="refused by the database even raw")._value.get()
    stored = store_messages(book, docs)
    assert [d["text"] for d in stored] == ["ok"]
    assert metrics.dropped.labels(reason="refused by the database even raw")._value.get() == before + 1
