"""The bridge's in-memory book of devices, and its limits on held bytes and log lines (pure)."""

import logging
from collections import Counter
from datetime import UTC, datetime, timedelta

import gevent
from bson import ObjectId

from carweb.bridge.book import DeviceBook, DeviceState, state_from_document
from carweb.bridge.limits import ArrivalWatermark, ByteBudget, FairQueue, RateLimitedLog

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def doc(device_id, seconds, topic="t", direction="in", text=None):
    """A message document as the bridge builds it, received `seconds` after T0."""
    return {
        "_id": ObjectId(),
        "device_id": device_id,
        "topic": f"{device_id}/{topic}",
        "direction": direction,
        "received_at": T0 + timedelta(seconds=seconds),
        "text": text,
    }


def test_numbers_follow_arrival_per_device_and_time_never_goes_back():
    """1, 2, 3 per device; a message stamped before its predecessor takes the predecessor's time."""
    book = DeviceBook()
    book.load(DeviceState("a"))
    book.load(state_from_document({"device_id": "b", "last_seq": 41, "last_seen_at": T0}))
    docs = [doc("a", 5), doc("b", 6), doc("a", 4), doc("b", -1)]
    book.number(docs)
    assert [d["seq"] for d in docs] == [1, 42, 2, 43]
    assert (
        docs[2]["received_at"] == docs[0]["received_at"] and docs[3]["received_at"] == docs[1]["received_at"]
    )


def test_recording_counts_inbound_messages_and_online_state():
    """Inbound messages count and mark the device online; `<id>/status offline` marks it offline."""
    book = DeviceBook()
    book.load(DeviceState("a"))
    docs = [doc("a", 1), doc("a", 2, "firmware/update", "out"), doc("a", 3, "status", text="offline")]
    book.number(docs)
    book.record(docs)
    state = book.get("a")
    assert (state.message_count, state.recorded_seq, state.online) == (2, 3, False)
    assert state.last_seen_at == T0 + timedelta(seconds=3) and state.created_at == T0 + timedelta(seconds=1)
    assert book.recorded_through == docs[-1]["_id"]


def test_a_flush_marks_clean_only_what_did_not_change_since():
    """Copies taken for a flush; a device that got a message meanwhile stays dirty."""
    book = DeviceBook()
    for device_id in ("a", "b"):
        book.load(DeviceState(device_id))
    first = [doc("a", 1), doc("b", 2)]
    book.number(first)
    book.record(first)
    written = book.dirty()
    assert [s.device_id for s in written] == ["a", "b"]  # least recently seen first
    later = [doc("b", 3)]
    book.number(later)
    book.record(later)
    book.flushed(written)
    assert [s.device_id for s in book.dirty()] == ["b"] and book.get("a").in_db


def test_changed_devices_are_handed_out_once_for_live_updates():
    """take_changed empties the set it returns."""
    book = DeviceBook()
    book.load(DeviceState("a"))
    docs = [doc("a", 1)]
    book.number(docs)
    book.record(docs)
    assert [s.device_id for s in book.take_changed()] == ["a"] and book.take_changed() == []


def test_the_book_forgets_idle_written_devices_beyond_its_capacity_only():
    """Over capacity, devices idle for two minutes and written go, least recently used first."""
    now = [0.0]
    book = DeviceBook(capacity=2, clock=lambda: now[0])
    for device_id in ("a", "b", "c"):
        book.load(DeviceState(device_id))
        docs = [doc(device_id, 1)]
        book.number(docs)
        book.record(docs)
        now[0] += 10
    book.flushed(book.dirty()[:2])  # a and b written; c not yet
    assert len(book) == 3  # a and b were used less than two minutes ago
    now[0] += 121
    book.load(DeviceState("d"))
    docs = [doc("d", 2)]
    book.number(docs)
    book.record(docs)
    book.flushed([])
    assert book.get("a") is None and book.get("b") is None and book.get("c") and book.get("d")


def test_byte_budget_holds_the_taker_until_bytes_are_given_back():
    """Taking over the limit waits; a message larger than the limit passes when nothing is held."""
    budget = ByteBudget(100)
    budget.take(80)
    waiter = gevent.spawn(budget.take, 50)
    gevent.sleep(0.01)
    assert not waiter.dead
    budget.give(80)
    waiter.join(1)
    assert waiter.dead and budget.used == 50
    budget.give(50)
    budget.take(500)
    assert budget.used == 500


def test_rate_limited_log_says_how_many_it_left_out(caplog):
    """One line per kind per interval; the next one counts the lines left out."""
    now = [0.0]
    logged = RateLimitedLog(logging.getLogger("carweb.test"), interval=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "carweb.test"):
        for _ in range(5):
            logged.warning("bad", "message refused: %s", "bad")
        logged.warning("other", "message refused: %s", "other")
        now[0] = 61
        logged.warning("bad", "message refused: %s", "bad")
    assert [r.getMessage() for r in caplog.records] == [
        "message refused: bad",
        "message refused: other",
        "message refused: bad (and 4 more since the last report)",
    ]


def test_fair_queue_spreads_a_burst_over_batches_and_keeps_each_devices_order():
    """A thousand of one device and one of another: the other's is in the first batch; order per device kept."""
    queue = FairQueue(maxsize=5000)
    for n in range(1000):
        queue.put("burst", ("burst", n))
    queue.put("quiet", ("quiet", 0))
    first = queue.take(100)
    assert first[-1] == ("quiet", 0) and len(first) == max(FairQueue.TURN, 100 // 2) + 1
    rest = []
    while queue.qsize():
        rest += queue.take(100)
    assert [n for device, n in first + rest if device == "burst"] == list(range(1000))


def test_fair_queue_gives_each_of_many_devices_its_turn_and_fills_batches_of_few():
    """600 waiting devices: TURN each at most; two devices: the batch fills from both."""
    queue = FairQueue(maxsize=50_000)
    for n in range(600):
        for k in range(40):
            queue.put(f"d{n}", (f"d{n}", k))
    batch = queue.take(1000)
    assert len(batch) == 1000 and max(Counter(d for d, _ in batch).values()) == FairQueue.TURN
    few = FairQueue(maxsize=5000)
    for n in range(2000):
        few.put(f"f{n % 2}", n)
    assert len(few.take(1000)) == 1000


def test_fair_queue_holds_the_producer_while_full():
    """A full queue holds the producer until a batch is taken."""
    queue = FairQueue(maxsize=3)
    for n in range(3):
        queue.put("a", n)
    producer = gevent.spawn(queue.put, "a", 3)
    gevent.sleep(0.01)
    assert not producer.dead
    assert queue.take(10) == [0, 1, 2]
    producer.join(1)
    assert queue.take(10) == [3]


def test_watermark_moves_only_past_messages_finished_in_arrival_order():
    """Finished out of order, the watermark waits for the oldest one still in the pipeline."""
    ids = [ObjectId() for _ in range(4)]
    watermark = ArrivalWatermark()
    for message_id in ids:
        watermark.arrived(message_id)
    assert watermark.finished([ids[2], ids[3]]) is None
    assert watermark.finished([ids[0]]) == ids[0]
    assert watermark.finished([ids[1]]) == ids[3]
