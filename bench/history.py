"""How long the newest page of a device with many messages takes, against a real database.

Usage: python -m bench.history [--messages 100000] [--mongodb-uri URI]
Without --mongodb-uri a SecantusDB is started on a free port and stopped afterwards.
Prints the time of carweb's windowed history query beside a plain sort+limit query.
"""

import argparse
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta

import mongoengine
from bson import ObjectId

from carweb import create_app
from carweb.config import TestConfig
from carweb.devstack import free_port, mongodb_uri, start_secantus, stop_processes
from carweb.history import SORT, HistoryQuery, decode_cursor, message_page
from carweb.models import Device, Message, User, ensure_indexes


def seed(device_id, count, rate_per_s):
    """Store `count` messages one device sent at a steady rate, and its device record."""
    start = datetime.now(UTC) - timedelta(seconds=count / rate_per_s)
    collection = Message._get_collection()
    for first in range(0, count, 5000):
        docs = [
            {
                "_id": ObjectId(),
                "device_id": device_id,
                "topic": f"{device_id}/telemetry",
                "payload": b'{"speed": 50}',
                "text": '{"speed": 50}',
                "data": {"speed": 50},
                "kind": "json",
                "size": 13,
                "qos": 1,
                "retain": False,
                "direction": "in",
                "received_at": start + timedelta(seconds=n / rate_per_s),
            }
            for n in range(first, min(first + 5000, count))
        ]
        collection.insert_many(docs, ordered=False)
    last = start + timedelta(seconds=(count - 1) / rate_per_s)
    return Device(device_id=device_id, created_at=start, last_seen_at=last, message_count=count).save()


def timed(function, runs=7):
    """Median and max wall time of `function` in milliseconds, and its last result."""
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = function()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times), result


def measure(messages, uri):
    """Seed one device and print how long its pages take."""
    mongoengine.connect(host=uri, tz_aware=True)
    ensure_indexes()
    device_id = f"bench-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    device = seed(device_id, messages, rate_per_s=1.0)
    print(f"seeded {messages} messages in {time.perf_counter() - started:.1f} s")
    median, worst, page = timed(lambda: message_page(device, HistoryQuery(limit=50)))
    print(
        f"carweb newest page (50 of {messages}): median {median:.1f} ms, max {worst:.1f} ms, {page.queries} query"
    )
    cursor = decode_cursor(page.older)
    median, worst, _ = timed(lambda: message_page(device, HistoryQuery(before=cursor, limit=50)))
    print(f"carweb second page by cursor:        median {median:.1f} ms, max {worst:.1f} ms")
    collection = Message._get_collection()
    median, worst, _ = timed(
        lambda: list(collection.find({"device_id": device_id}, sort=SORT, limit=50)), runs=3
    )
    print(f"plain sort+limit (no window):        median {median:.1f} ms, max {worst:.1f} ms")
    client = logged_in_client(uri)
    median, worst, status = timed(lambda: render_page(client, device_id), runs=5)
    print(
        f"whole page GET /devices/<id> (Flask): median {median:.1f} ms, max {worst:.1f} ms, status {status}"
    )
    mongoengine.disconnect()


def logged_in_client(uri):
    """A Flask test client of carweb on `uri`, logged in as a viewer."""
    app = create_app(TestConfig(MONGODB_URI=uri, WTF_CSRF_ENABLED=False))
    client = app.test_client()
    with app.app_context():
        User.create_or_update("bench@example.com", "bench-password", role="viewer")
    client.post("/login", data={"email": "bench@example.com", "password": "bench-password"})
    return client


def render_page(client, device_id):
    """Render the device page through the app; return the HTTP status."""
    response = client.get(f"/devices/{device_id}")
    assert b'class="message' in response.data
    return response.status_code


def main():
    """Parse arguments, start a database when none is given, and measure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--mongodb-uri", default=None)
    args = parser.parse_args()
    if args.mongodb_uri:
        measure(args.messages, args.mongodb_uri)
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as storage:
        process = start_secantus(port, storage)
        try:
            measure(args.messages, mongodb_uri(port, "bench_history"))
        finally:
            stop_processes([process])


if __name__ == "__main__":
    main()
