"""Telemetry charts: series of a payload, rollups kept by the bridge, and charts exact against the raw messages."""

import json
import math
import random
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from carweb.bridge.book import DeviceBook
from carweb.bridge.documents import build_documents
from carweb.bridge.flush import flush_devices
from carweb.bridge.folds import fold_closed
from carweb.bridge.ingest import prepare_batch, store_messages
from carweb.bridge.rollups import (
    MAX_SERIES,
    RollupBook,
    flush_rollups,
    recover_rollups,
    rollups_collection,
    write_deltas,
)
from carweb.models import Device, Message, Rollup
from carweb.telemetry.charts import RAW_MAX, chart
from carweb.telemetry.page import recent_series
from carweb.telemetry.series import (
    MAX_FIELDS,
    message_points,
    numeric_fields,
    seconds_since_epoch,
    series_name,
)
from tests.ingest_support import MAX_PAYLOAD, ingest

T0 = datetime(2026, 11, 2, 22, 0, tzinfo=UTC)  # two hours before a day ends


# --- series of a payload (pure) ---------------------------------------------------------


def test_numbers_are_named_by_dotted_path_and_booleans_count_as_0_and_1():
    data = {
        "speed": 50,
        "engine": {"temp": 91.5, "on": True},
        "tires": [2.1, 2.2],
        "vin": "W0L",
        "gear": None,
    }
    assert numeric_fields(data) == [
        ("speed", 50.0),
        ("engine.temp", 91.5),
        ("engine.on", 1.0),
        ("tires.0", 2.1),
        ("tires.1", 2.2),
    ]


def test_nan_and_infinity_are_not_values_and_a_bare_number_is_its_topics_series():
    assert numeric_fields({"a": float("nan"), "b": float("inf"), "c": -0.5}) == [("c", -0.5)]
    doc = {"topic": "car-1/sensors/oil", "kind": "json", "data": 97, "direction": "in"}
    assert message_points(doc) == {"sensors/oil": 97.0}
    assert series_name("car-1", "speed") == "speed"
    assert series_name("car-1/telemetry", "engine.temp") == "telemetry: engine.temp"


def test_a_payload_of_a_million_numbers_gives_the_first_few_and_deep_nesting_stops():
    assert len(numeric_fields(list(range(1_000_000)))) == MAX_FIELDS
    deep = {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}, "top": 2}
    assert numeric_fields(deep) == [("top", 2.0)]


def test_outbound_text_and_binary_messages_have_no_points():
    assert message_points({"topic": "d/t", "kind": "json", "data": {"x": 1}, "direction": "out"}) == {}
    assert message_points({"topic": "d/t", "kind": "text", "text": "12", "direction": "in"}) == {}


# --- rollups and charts against the raw messages ------------------------------------------


def car_messages(device_id, start, seconds, every, gap=None, seed=1):
    """(paho-like message, time) pairs: speed, engine temperature and a flag every `every` s, silent in `gap`."""
    rnd = random.Random(seed)
    pairs = []
    for n in range(int(seconds / every)):
        at = start + timedelta(seconds=n * every)
        if gap and gap[0] <= at < gap[1]:
            continue
        payload = {
            "speed": round(rnd.uniform(0, 180), 2),
            "engine": {"temp": rnd.randint(60, 110)},
            "on": n % 3 == 0,
        }
        msg = SimpleNamespace(
            topic=f"{device_id}/telemetry", payload=json.dumps(payload).encode(), qos=1, retain=False
        )
        pairs.append((msg, at))
    return pairs


def store_with_rollups(pairs, rollups=None, chunk=500):
    """Store the messages through the bridge's steps, rolling them up; the RollupBook."""
    rollups = rollups or RollupBook()
    book = DeviceBook()
    for first in range(0, len(pairs), chunk):
        ingest(build_documents(pairs[first : first + chunk], MAX_PAYLOAD), book, rollups)
    return rollups


def expected(pairs, name, since, until, bucket):
    """{bucket start: (min, max, mean, count)} of one series straight from the raw values."""
    values = {}
    for msg, at in pairs:
        if not since <= at < until:
            continue
        doc = {"topic": msg.topic, "kind": "json", "data": json.loads(msg.payload), "direction": "in"}
        value = message_points(doc).get(name)
        if value is not None:
            start = math.floor(seconds_since_epoch(at) / bucket) * bucket
            values.setdefault(start, []).append(value)
    return {start: (min(v), max(v), sum(v) / len(v), len(v)) for start, v in values.items()}


def assert_exact(result, pairs):
    """Every bucket of every series equals what the raw messages give, and no bucket is missing or extra."""
    for series in result.series:
        want = expected(pairs, series["name"], result.since, result.until, result.bucket_seconds)
        got = {p[0]: tuple(p[1:]) for p in series["points"]}
        assert sorted(got) == sorted(want), series["name"]
        for start, (low, high, mean, count) in want.items():
            assert got[start][0] == low and got[start][1] == high and got[start][3] == count
            assert got[start][2] == pytest.approx(mean, rel=1e-12)


NAMES = ["telemetry: speed", "telemetry: engine.temp", "telemetry: on"]


@pytest.fixture
def three_hours(app):
    """A car that spoke every 2 s for three hours across midnight, silent for 40 minutes in between."""
    gap = (T0 + timedelta(minutes=50), T0 + timedelta(minutes=90))
    pairs = car_messages("car", T0, 3 * 3600, 2, gap=gap)
    rollups = store_with_rollups(pairs)
    return pairs, rollups, gap


def test_buckets_are_exact_from_messages_minutes_and_folded_hours_across_a_silent_gap(three_hours):
    pairs, rollups, gap = three_hours
    device = Device.objects.get(device_id="car")
    short = chart(device, NAMES, T0 + timedelta(minutes=40), T0 + timedelta(minutes=100), now=T0)
    assert short.source == "messages" and short.reads <= RAW_MAX
    assert_exact(short, pairs)
    whole = chart(device, NAMES, T0, T0 + timedelta(hours=3), points=200, now=T0)
    assert (whole.source, whole.bucket_seconds) == ("minutes", 60)
    assert_exact(whole, pairs)
    in_gap = [p for p in whole.series[0]["points"] if gap[0] <= datetime.fromtimestamp(p[0], UTC) < gap[1]]
    assert in_gap == []  # silence stays a gap, not zeros
    assert fold_closed(rollups, now=T0 + timedelta(days=2), limit=2) == 2  # a flush folds a few at a time
    assert fold_closed(rollups, now=T0 + timedelta(days=2)) == 1 + 2  # the third hour, then two days
    folded = chart(device, NAMES, T0, T0 + timedelta(hours=3), points=200, now=T0)
    assert folded.reads <= 3 + 1  # the three hours' documents, not 180 minutes
    assert_exact(folded, pairs)
    assert [s["points"] for s in folded.series] == [s["points"] for s in whole.series]
    coarse = chart(device, NAMES, T0 - timedelta(days=1), T0 + timedelta(days=2), points=50, now=T0)
    assert (coarse.source, coarse.bucket_seconds) == ("hours", 3600 * 2)
    assert_exact(coarse, pairs)


def test_an_unfolded_hour_is_read_from_its_minutes_beside_folded_ones(three_hours):
    pairs, rollups, _ = three_hours
    fold_closed(rollups, now=T0 + timedelta(days=2))
    Rollup.objects(
        device_id="car", level="h", start=T0 + timedelta(hours=1)
    ).delete()  # as a crash would leave it
    Rollup.objects(device_id="car", level="d").delete()
    device = Device.objects.get(device_id="car")
    assert_exact(chart(device, NAMES, T0, T0 + timedelta(hours=3), points=200, now=T0), pairs)
    assert_exact(chart(device, NAMES, T0, T0 + timedelta(days=1), points=20, now=T0), pairs)


def test_messages_not_rolled_up_yet_are_added_from_the_messages(app):
    now = datetime.now(UTC).replace(microsecond=0)
    pairs = car_messages("fresh", now - timedelta(minutes=30), 1800, 1)
    store_with_rollups(pairs[:1000])
    book = DeviceBook()
    store_messages(
        book, prepare_batch(book, build_documents(pairs[1000:], MAX_PAYLOAD))
    )  # stored, not rolled up
    device = Device.objects.get(device_id="fresh")
    result = chart(device, NAMES, now - timedelta(hours=2), now + timedelta(seconds=1), points=100, now=now)
    assert result.source == "minutes"
    assert_exact(result, pairs)


def test_a_retried_flush_and_a_recovery_add_nothing_twice(app):
    pairs = car_messages("again", T0, 600, 1)
    store_with_rollups(pairs[:300])
    assert recover_rollups(RollupBook(process="0a0a0a0a0a"), "test-bridge") == 0  # nothing left unwritten
    crashed = RollupBook()  # this process: the messages' ids say it received them
    book = DeviceBook()
    stored = store_messages(book, prepare_batch(book, build_documents(pairs[300:], MAX_PAYLOAD)))
    crashed.record(stored[:150], through=stored[149]["_id"])
    flush_rollups(crashed, "crashing-bridge")
    crashed.record(stored[150:], through=stored[-1]["_id"])
    deltas, _ = crashed.take()
    write_deltas(rollups_collection(), deltas[:3], crashed.process)  # died writing the rest
    assert recover_rollups(RollupBook(process="0b0b0b0b0b"), "crashing-bridge") == 150
    assert recover_rollups(RollupBook(process="0c0c0c0c0c"), "crashing-bridge") == 0
    device = Device.objects.get(device_id="again")
    assert_exact(chart(device, NAMES, T0, T0 + timedelta(minutes=10), points=10, now=T0), pairs)


def test_a_flush_retried_after_a_failed_write_writes_each_minute_once(app):
    pairs = car_messages("retry", T0, 600, 1)
    rollups = RollupBook()
    book = DeviceBook()
    stored = store_messages(book, prepare_batch(book, build_documents(pairs, MAX_PAYLOAD)))
    book.record(stored)
    flush_devices(book)
    rollups.record(stored)
    deltas, retried = rollups.take()
    write_deltas(rollups_collection(), deltas[:4], rollups.process)  # then the database went away
    assert retried is False and rollups.take() == (deltas, True)
    flush_rollups(rollups, "retrying-bridge")
    device = Device.objects.get(device_id="retry")
    assert_exact(chart(device, NAMES, T0, T0 + timedelta(minutes=10), points=10, now=T0), pairs)


def test_a_minute_is_written_once_it_has_ended_unless_it_is_busy(app):
    """A car's minute waits for its end (one insert, not an upsert a flush); a busy device's goes as it fills."""
    book, rollups = DeviceBook(), RollupBook()
    quiet = store_messages(
        book, prepare_batch(book, build_documents(car_messages("quiet", T0, 30, 5), MAX_PAYLOAD))
    )
    busy = store_messages(
        book, prepare_batch(book, build_documents(car_messages("busy", T0, 30, 0.2), MAX_PAYLOAD))
    )
    rollups.record(quiet + busy, through=busy[-1]["_id"])
    assert flush_rollups(rollups, "waiting-bridge", now=T0 + timedelta(seconds=40)) == 1  # only the busy one
    assert Rollup.objects(level="m").distinct("device_id") == ["busy"]
    kept = rollups.open[("quiet", int(T0.timestamp()) // 60)]
    assert rollups.saved == (busy[-1]["_id"], kept.first_id)  # a recovery would start at the kept minute
    assert recover_rollups(RollupBook(process="0e0e0e0e0e"), "waiting-bridge") == len(quiet) + len(busy)
    assert Rollup.objects.get(device_id="quiet", level="m").c == len(quiet)  # the crash lost nothing
    assert Rollup.objects.get(device_id="busy", level="m").c == len(busy)  # and added nothing twice


def test_two_bridges_adding_to_the_same_minutes_add_up(app):
    """A shared subscription splits one device's messages between bridges: both write its minutes."""
    pairs = car_messages("shared", T0, 300, 1)
    book, ours, theirs = DeviceBook(), RollupBook(), RollupBook(process="0d0d0d0d0d")
    stored = store_messages(book, prepare_batch(book, build_documents(pairs, MAX_PAYLOAD)))
    book.record(stored)
    flush_devices(book)
    ours.record(stored[0::2])
    theirs.record(stored[1::2])
    flush_rollups(theirs, "bridge-b")  # creates the minutes; ours then finds them there
    flush_rollups(ours, "bridge-a")
    device = Device.objects.get(device_id="shared")
    assert_exact(chart(device, NAMES, T0, T0 + timedelta(minutes=5), points=5, now=T0), pairs)


def test_a_device_naming_a_new_field_in_every_message_is_capped_per_minute(app):
    pairs = [
        (SimpleNamespace(topic="churn/t", payload=json.dumps({f"k{n}": n}).encode(), qos=1, retain=False), T0)
        for n in range(MAX_SERIES + 50)
    ]
    store_with_rollups(pairs)
    minute = Rollup.objects.get(device_id="churn", level="m")
    assert len(minute.f) == MAX_SERIES and minute.c == MAX_SERIES + 50


def test_the_page_lists_recent_series_with_their_newest_value(three_hours):
    pairs, _, _ = three_hours
    listed = {s["name"]: s for s in recent_series(Device.objects.get(device_id="car"))}
    assert sorted(listed) == sorted(NAMES)
    last_msg, last_at = pairs[-1]
    assert listed["telemetry: speed"]["value"] == json.loads(last_msg.payload)["speed"]
    assert listed["telemetry: speed"]["at"] == last_at


def test_a_chart_of_100000_messages_reads_a_bounded_number_of_documents(app):
    """100,000 messages over 28 hours: the whole range reads a few dozen rollups, not the messages."""
    start = datetime(2026, 11, 3, 0, 0, tzinfo=UTC)
    docs = []
    for n in range(100_000):
        docs.append(
            {
                "_id": None,
                "device_id": "big",
                "seq": n + 1,
                "topic": "big/telemetry",
                "kind": "json",
                "data": {"speed": float(n % 181), "rpm": 800 + n % 4000},
                "direction": "in",
                "received_at": start + timedelta(seconds=n),
            }
        )
    from bson import ObjectId

    for doc in docs:
        doc["_id"] = ObjectId()
    collection = Message._get_collection()
    for first in range(0, len(docs), 5000):
        collection.insert_many(docs[first : first + 5000], ordered=False)
    Device(device_id="big", created_at=start, last_seq=100_000, message_count=100_000).save()
    rollups = RollupBook()
    rollups.record(docs)
    flush_rollups(rollups, "bulk")
    fold_closed(rollups, now=start + timedelta(days=3))
    from tests.db_support import documents_examined

    device = Device.objects.get(device_id="big")
    names = ["telemetry: speed", "telemetry: rpm"]
    result, examined = documents_examined(lambda: chart(device, names, now=start + timedelta(days=3)))
    assert result.source in ("minutes", "hours") and len(result.series[0]["points"]) <= 1000
    assert examined <= 100, examined
    assert sum(p[4] for p in result.series[0]["points"]) == 100_000
    total = sum(p[3] * p[4] for p in result.series[0]["points"])
    assert total == pytest.approx(sum(float(n % 181) for n in range(100_000)))
