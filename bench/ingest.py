"""Ingest throughput: raw insert_many, carweb end to end, and per-message insert_one, in one run.

Usage: python -m bench.ingest [--messages 5000] [--devices 10]
Prints documents (or messages) per second for each and the ratios carweb/raw and
insert_one/raw. All writes use the journaled write concern the bridge uses (j=True),
into collections with the same indexes as `messages`. carweb's run ends when its own
`stored` counter (read over HTTP, not from the database under test) reaches the count;
the stored documents and the device counters are then counted and printed. The devices are `mosquitto_pub`
processes (QoS 1, one per device), so the load generator takes little of the machine's
CPU from the database and carweb; without mosquitto_pub, paho publishes from here.
"""

import argparse
import shutil
import subprocess
import time
from datetime import UTC, datetime

import mongoengine
from bson import ObjectId

from bench.stack import benchmark_stack
from carweb.bridge.ingest import JOURNALED
from carweb.models import Message, ensure_indexes


def sample_documents(count, devices, prefix):
    """Message-shaped documents spread over `devices` devices."""
    now = datetime.now(UTC)
    return [
        {
            "_id": ObjectId(),
            "device_id": f"{prefix}-{n % devices}",
            "seq": n // devices + 1,  # each device's messages numbered 1, 2, ... as the bridge does
            "topic": f"{prefix}-{n % devices}/telemetry",
            "payload": b'{"speed": 50.5, "rpm": 2100, "battery": 13.9}',
            "text": '{"speed": 50.5, "rpm": 2100, "battery": 13.9}',
            "data": {"speed": 50.5, "rpm": 2100, "battery": 13.9},
            "kind": "json",
            "size": 46,
            "qos": 1,
            "retain": False,
            "direction": "in",
            "received_at": now,
        }
        for n in range(count)
    ]


def raw_insert_many(stack, count, devices):
    """Documents/s of insert_many batches of 500 into a collection indexed like `messages`."""
    collection = Message._get_collection().with_options(write_concern=JOURNALED)
    docs = sample_documents(count, devices, f"raw-{ObjectId()}")
    started = time.perf_counter()
    for first in range(0, count, 500):
        collection.insert_many(docs[first : first + 500], ordered=False)
    return count / (time.perf_counter() - started)


def per_message_insert_one(stack, count, devices):
    """Messages/s of one insert_one per message."""
    collection = Message._get_collection().with_options(write_concern=JOURNALED)
    docs = sample_documents(count, devices, "one")
    started = time.perf_counter()
    for doc in docs:
        collection.insert_one(doc)
    return count / (time.perf_counter() - started)


def publish_with_mosquitto_pub(stack, count, devices, payload):
    """Start one `mosquitto_pub -l` per device (C, so the load generator takes little CPU)."""
    lines = (payload.decode() + "\n") * (count // devices)
    processes = []
    for n in range(devices):
        process = subprocess.Popen(
            [
                "mosquitto_pub",
                "-p",
                str(stack.mqtt_port),
                "-q",
                "1",
                "-M",
                "1000",
                "-l",
                "-t",
                f"e2e-{n}/telemetry",
            ],
            stdin=subprocess.PIPE,
        )
        processes.append(process)
    for process in processes:  # every pipe is written before any is waited for
        process.stdin.write(lines.encode())
        process.stdin.close()
    return lambda: all(process.wait() == 0 for process in processes)


def publish_with_paho(stack, count, devices, payload):
    """Publish from this process with paho (when mosquitto_pub is not installed)."""
    publisher = stack.publisher()
    infos = [publisher.publish(f"e2e-{n % devices}/telemetry", payload, qos=1) for n in range(count)]

    def finished():
        done = all(info.is_published() for info in infos)
        publisher.disconnect()
        return done

    return finished


def carweb_end_to_end(stack, count, devices):
    """Messages/s from the first publish until the bridge has stored all of them."""
    stack.start_carweb()
    db = stack.mongo()[stack.db_name]
    payload = b'{"speed": 50.5, "rpm": 2100, "battery": 13.9}'
    publish = publish_with_mosquitto_pub if shutil.which("mosquitto_pub") else publish_with_paho
    total = count - count % devices
    started = time.perf_counter()
    finished = publish(stack, total, devices, payload)
    # carweb's own stored counter (bumped when a batch's insert returns) is polled over
    # HTTP: polling the database would add reads to the database being measured.
    while stack.metrics()["carweb_messages_stored_total"] < total:
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    names = [f"e2e-{n}" for n in range(devices)]
    assert finished(), "the publishers did not get every message acknowledged"
    exact = db.messages.count_documents({"device_id": {"$in": names}})
    counted = sum(d["message_count"] for d in db.devices.find({"device_id": {"$in": names}}))
    return total / elapsed, exact, counted


def main():
    """Run the three measurements in one stack and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--devices", type=int, default=10)
    args = parser.parse_args()
    with benchmark_stack() as stack:
        mongoengine.connect(host=stack.db_uri, tz_aware=True)
        ensure_indexes()
        raw_before = raw_insert_many(stack, args.messages, args.devices)
        carweb, exact, counted = carweb_end_to_end(stack, args.messages, args.devices)
        raw_after = raw_insert_many(stack, args.messages, args.devices)
        one = per_message_insert_one(stack, args.messages, args.devices)
        mongoengine.disconnect()
    # The collection grows during the run and inserts slow down as it does, so raw
    # insert_many is measured before and after carweb and the mean is the reference.
    raw = (raw_before + raw_after) / 2
    print(f"messages per run: {args.messages} over {args.devices} devices (j=True writes)")
    print(
        f"raw insert_many (batches of 500):   {raw:8.0f} docs/s  (before {raw_before:.0f}, after {raw_after:.0f})"
    )
    print(f"carweb end to end (publish->stored): {carweb:8.0f} msgs/s  ({exact} stored, {counted} counted)")
    print(f"per-message insert_one:              {one:8.0f} msgs/s")
    print(f"ratio carweb / raw insert_many:      {carweb / raw:8.2f}")
    print(f"ratio insert_one / raw insert_many:  {one / raw:8.2f}")


if __name__ == "__main__":
    main()
