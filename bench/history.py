"""How long a device's page takes for every shape of history, against a real database.

Usage: python -m bench.history [--messages 100000] [--mongodb-uri URI]
Without --mongodb-uri a SecantusDB is started on a free port and stopped afterwards.
Seeds one device per shape with numbered messages as the bridge stores them (steady;
one burst; a burst then silence; silence then a burst), then times the whole
`GET /devices/<id>` for the newest page, a cursor deep in the past, a topic filter and a
time filter that match nothing, and prints each median beside the documents the page read.
"""

import argparse
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mongoengine
from bson import ObjectId

from bench.stack import on_database
from carweb import create_app
from carweb.config import TestConfig
from carweb.history import HistoryQuery, message_page
from carweb.models import Device, Message, User
from carweb.upgrade import prepare_database

NOW = datetime.now(UTC).replace(microsecond=0)


def steady(count):
    """One message a second until now."""
    return [NOW - timedelta(seconds=count - n) for n in range(count)]


def burst(count, start=None):
    """Every message within about a minute, as fast as a broker delivers them."""
    start = start or NOW - timedelta(minutes=1)
    return [start + timedelta(microseconds=n * 60_000_000 // count) for n in range(count)]


SHAPES = {
    "steady": steady,
    "one burst": burst,
    "burst, then 70 s of silence, then one": lambda count: (
        burst(count - 1, NOW - timedelta(seconds=140)) + [NOW - timedelta(seconds=10)]
    ),
    "a year of silence, then a burst": lambda count: [NOW - timedelta(days=365)] + burst(count - 1),
}


def seed(device_id, times):
    """Store one numbered message per time for one device, and its device record."""
    collection = Message._get_collection()
    for first in range(0, len(times), 5000):
        docs = [
            {
                "_id": ObjectId(),
                "device_id": device_id,
                "seq": n + 1,
                "topic": f"{device_id}/telemetry",
                "payload": b'{"speed": 50}',
                "text": '{"speed": 50}',
                "data": {"speed": 50},
                "kind": "json",
                "size": 13,
                "qos": 1,
                "retain": False,
                "direction": "in",
                "received_at": at,
            }
            for n, at in enumerate(times[first : first + 5000], start=first)
        ]
        collection.insert_many(docs, ordered=False)
    return Device(
        device_id=device_id,
        created_at=times[0],
        last_seen_at=times[-1],
        message_count=len(times),
        last_seq=len(times),
        seen_seq=1,
    ).save()


def timed(function, runs=7):
    """Median and max wall time of `function` in milliseconds, and its last result."""
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = function()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times), result


def requests_of(device, times):
    """(label, query string, HistoryQuery) of the pages measured on one device."""
    quiet = times[0] - timedelta(days=30)
    gap = [(a, b) for a, b in zip(times, times[1:], strict=False) if b - a > timedelta(days=2)]
    silence = (
        []
        if not gap
        else [time_window("time filter, in the silence", gap[0][0] + (gap[0][1] - gap[0][0]) / 2)]
    )
    return silence + [
        ("newest page", "", HistoryQuery(limit=50)),
        ("cursor deep in the past", "?before=100", HistoryQuery(before=100, limit=50)),
        ("topic filter, no match", "?topic=%2B/nothing/%23", HistoryQuery(topic="+/nothing/#", limit=50)),
        time_window("time filter, before the first", quiet),
    ]


def time_window(label, start):
    """A request for the hour from `start` (whole minutes, as the form sends them)."""
    start = start.replace(second=0, microsecond=0)
    end = start + timedelta(hours=1)
    query_string = f"?since={start:%Y-%m-%dT%H:%M}&until={end:%Y-%m-%dT%H:%M}"
    return label, query_string, HistoryQuery(since=start, until=end, limit=50)


def settle(database):
    """Wait (up to a minute) until the database process has finished its own work after seeding.

    SecantusDB writes checkpoints in the background after a bulk load, which would
    otherwise be timed with the first pages.
    """
    if database is None:
        return
    stat = Path(f"/proc/{database.pid}/stat")
    for _ in range(60):
        before = sum(int(field) for field in stat.read_text().split()[13:15])
        time.sleep(1)
        if sum(int(field) for field in stat.read_text().split()[13:15]) - before < 10:  # < 0.1 s of CPU
            return


def measure(messages, uri, database=None):
    """Seed one device per shape and print how long its pages take."""
    mongoengine.connect(host=uri, tz_aware=True)
    prepare_database()
    client = logged_in_client(uri)
    print(
        f"whole GET /devices/<id> in ms, and the documents the page read\n{'':28s} {'median':>8s} {'max':>8s} {'reads':>6s}"
    )
    for shape, make_times in SHAPES.items():
        Message.drop_collection()  # each shape alone at its size
        prepare_database()
        device_id = f"bench-{uuid.uuid4().hex[:8]}"
        times = make_times(messages)
        started = time.perf_counter()
        device = seed(device_id, times)
        print(f"{shape}: seeded {len(times)} messages in {time.perf_counter() - started:.0f} s")
        settle(database)
        for label, query_string, query in requests_of(device, times):
            reads = message_page(device, query).reads
            median, worst, status = timed(lambda q=query_string, d=device_id: render_page(client, d, q))
            print(f"  {label:26s} {median:8.1f} {worst:8.1f} {reads:6d}")
            assert status == 200
    mongoengine.disconnect()


def logged_in_client(uri):
    """A Flask test client of carweb on `uri`, logged in as a viewer."""
    app = create_app(TestConfig(MONGODB_URI=uri, WTF_CSRF_ENABLED=False))
    client = app.test_client()
    with app.app_context():
        User.create_or_update("bench@example.com", "bench-password", role="viewer")
    client.post("/login", data={"email": "bench@example.com", "password": "bench-password"})
    return client


def render_page(client, device_id, query_string):
    """Render the device page through the app; return the HTTP status."""
    return client.get(f"/devices/{device_id}{query_string}").status_code


def main():
    """Parse arguments and measure, on a database started for it when none is given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--mongodb-uri", default=None)
    args = parser.parse_args()
    on_database(measure, args.messages, args.mongodb_uri, "bench_history")


if __name__ == "__main__":
    main()
