"""How long the device list takes with thousands of devices, against a real database.

Usage: python -m bench.devices [--devices 10000] [--mongodb-uri URI]
Without --mongodb-uri a SecantusDB is started on a free port and stopped afterwards.
One message from each device goes through the bridge's own steps (numbering, storing,
the device flush), as when a fleet first connects; then the whole `GET /devices` is
timed for the first page, page 150 (by following its Older links), a search and an
exact id, beside the devices each request read.
"""

import argparse
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import mongoengine

from bench.history import logged_in_client, settle, timed
from bench.stack import device_list_page, on_database
from carweb.bridge.book import DeviceBook
from carweb.bridge.documents import build_documents
from carweb.bridge.flush import flush_devices
from carweb.bridge.ingest import prepare_batch, store_messages
from carweb.fleet import device_page
from carweb.upgrade import prepare_database


def seed_fleet(count):
    """One telemetry message from each of `count` devices, through the bridge's steps, 1,000 at a time."""
    book = DeviceBook()
    for first in range(0, count, 1000):
        arrivals = [
            (
                SimpleNamespace(
                    topic=f"car-{n:06d}/telemetry", payload=b'{"speed": 50}', qos=1, retain=False
                ),
                now(),
            )
            for n in range(first, min(first + 1000, count))
        ]
        book.record(store_messages(book, prepare_batch(book, build_documents(arrivals, 256 * 1024))))
        flush_devices(book)


def now():
    """The arrival time of a message."""
    return datetime.now(UTC)


def measure(count, uri, database=None):
    """Seed the fleet and print the device list's times."""
    mongoengine.connect(host=uri, tz_aware=True)
    prepare_database()
    started = time.perf_counter()
    seed_fleet(count)
    print(
        f"seeded {count} devices (one message each, through the bridge's steps) in {time.perf_counter() - started:.0f} s"
    )
    settle(database)
    client = logged_in_client(uri)
    deep = device_list_page(lambda path: client.get(path).get_data(as_text=True), 150)
    before = int(deep.split("before=")[1]) if "before=" in deep else None
    requests = [
        ("/devices (first page)", "/devices", lambda: device_page(limit=50).reads),
        ("/devices, page 150", deep, lambda: device_page(before=before, limit=50).reads),
        ("search 'car-0099'", "/devices?q=car-0099", lambda: device_page(limit=50, search="car-0099").reads),
        ("exact id", "/devices?q=car-000003", lambda: device_page(limit=50, search="car-000003").reads),
    ]
    print(
        f"whole GET /devices in ms, and the devices the page read\n{'':28s} {'median':>8s} {'max':>8s} {'reads':>6s}"
    )
    for label, path, reads in requests:
        median, worst, status = timed(lambda p=path: client.get(p).status_code)
        assert status == 200
        print(f"  {label:26s} {median:8.1f} {worst:8.1f} {reads():6d}")
    mongoengine.disconnect()


def main():
    """Parse arguments and measure, on a database started for it when none is given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--mongodb-uri", default=None)
    args = parser.parse_args()
    on_database(measure, args.devices, args.mongodb_uri, "bench_devices")


if __name__ == "__main__":
    main()
