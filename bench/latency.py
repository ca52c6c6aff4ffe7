"""Publish-to-browser latency: MQTT publish until the Socket.IO `messages` event arrives.

Usage: python -m bench.latency [--rates 100,500] [--seconds 10]
A logged-in Socket.IO client watches one device; a publisher sends at each rate for the
given time, each payload carrying its send time. Prints p50/p90/p99 per rate, and the
database's own single insert round trip (insert_one, j=True) beside them.
"""

import argparse
import json
import statistics
import threading
import time
import uuid

import socketio
from bson import ObjectId

from bench.stack import benchmark_stack
from carweb.bridge.ingest import JOURNALED


def percentile(values, share):
    """The value below which `share` of the sorted values lie."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def database_round_trip(stack, runs=200):
    """Median milliseconds of one journaled insert_one into the benchmark database."""
    with stack.mongo() as mongo:
        collection = mongo[stack.db_name]["latency_probe"].with_options(write_concern=JOURNALED)
        times = []
        for n in range(runs):
            started = time.perf_counter()
            collection.insert_one({"_id": ObjectId(), "n": n})
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure_rate(stack, sio, publisher, rate, seconds):
    """Latencies (ms) of messages published at `rate` per second for `seconds`."""
    device_id = f"latency-{uuid.uuid4().hex[:8]}"
    latencies, done = [], threading.Event()
    expected = int(rate * seconds)

    def on_messages(messages):
        now = time.time()
        for message in messages:
            latencies.append((now - json.loads(message["body"])["t"]) * 1000)
        if len(latencies) >= expected:
            done.set()

    sio.on("messages", on_messages)
    assert sio.call("watch_device", {"device_id": device_id}, timeout=5)["ok"]
    interval, next_at = 1.0 / rate, time.perf_counter()
    for n in range(expected):
        publisher.publish(f"{device_id}/telemetry", json.dumps({"n": n, "t": time.time()}), qos=1)
        next_at += interval
        time.sleep(max(0.0, next_at - time.perf_counter()))
    done.wait(30)
    return latencies


def main():
    """Measure each rate in one stack and print the percentiles."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="100,500")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with benchmark_stack() as stack:
        url = stack.start_carweb()
        sio = socketio.Client()
        sio.connect(url, headers={"Cookie": stack.logged_in_cookie()}, transports=["websocket"])
        publisher = stack.publisher()
        try:
            for rate in (float(r) for r in args.rates.split(",")):
                latencies = measure_rate(stack, sio, publisher, rate, args.seconds)
                print(
                    f"{rate:5.0f} msg/s: {len(latencies)} delivered, latency p50 {percentile(latencies, 0.5):6.1f} ms"
                    f"  p90 {percentile(latencies, 0.9):6.1f} ms  p99 {percentile(latencies, 0.99):6.1f} ms"
                )
            print(
                f"database single insert_one (j=True) round trip: median {database_round_trip(stack):.1f} ms"
            )
        finally:
            publisher.disconnect()
            sio.disconnect()


if __name__ == "__main__":
    main()
