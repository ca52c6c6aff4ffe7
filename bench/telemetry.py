"""Telemetry charts: the device page and its chart for long histories, a week's range, live points.

Usage: python -m bench.telemetry [--messages 100000] [--week-days 7] [--runs 30] [--live 300]

Seeds two cars that published once a second until now, their messages stored and rolled
up as the bridge does (carweb's own RollupBook, flush and fold): one with `--messages`
messages, one with `--week-days` days of them (604,800 for a week). Then, against carweb
under gunicorn with the embedded bridge:
- the device page of the first car, and its default chart's request (the last hour, three
  series): server reply times;
- the page in Chromium: from the page's response to the chart drawn (`data-drawn`);
- a week's range of the second car: reply times and documents read;
- live points: a car publishes `--live` messages at 10/s while its page is open; the time
  from each publish to its point on the chart (an upper bound of stored-to-chart).
"""

import argparse
import json
import math
import statistics
import threading
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import mongoengine
import requests
from bson import ObjectId

from bench.latency import percentile
from bench.stack import benchmark_stack
from carweb.bridge.folds import fold_closed
from carweb.bridge.rollups import RollupBook, flush_rollups
from carweb.models import Device, Message
from carweb.upgrade import prepare_database

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
CHROMIUM_ARGS += ["--disable-component-update", "--disable-sync"]
SERIES = ["telemetry: battery", "telemetry: coolant_temp", "telemetry: speed"]
SEED_CHUNK = 5000


def car_payload(n):
    """What a simulated car sends, as the bridge stores it: bytes, text and parsed JSON."""
    data = {
        "speed": round(60 + 50 * math.sin(n / 600), 1),
        "rpm": 800 + (n * 37) % 3000,
        "battery": round(12.6 + 0.8 * math.sin(n / 3600), 2),
        "coolant_temp": round(88 + 4 * math.sin(n / 900), 1),
        "position": {"lat": 52.5 + n * 1e-6, "lon": 13.4 - n * 1e-6},
    }
    text = json.dumps(data)
    return {"payload": text.encode(), "text": text, "data": data, "kind": "json", "size": len(text)}


def seed_history(device_id, count, end):
    """`count` messages a second apart until `end`, stored and rolled up as the bridge keeps them."""
    start = end - timedelta(seconds=count)
    rollups = RollupBook()
    collection = Message._get_collection()
    for first in range(0, count, SEED_CHUNK):
        docs = []
        for n in range(first, min(first + SEED_CHUNK, count)):
            doc = {"_id": ObjectId(), "device_id": device_id, "seq": n + 1, "topic": f"{device_id}/telemetry"}
            doc.update(car_payload(n), qos=1, retain=False, direction="in")
            doc["received_at"] = start + timedelta(seconds=n + 1)
            docs.append(doc)
        collection.insert_many(docs, ordered=False)
        rollups.record(docs)
        flush_rollups(rollups, "bench-seed")
    fold_closed(rollups, now=end)
    Device(
        device_id=device_id, created_at=start, last_seen_at=end, message_count=count, last_seq=count
    ).save()


def timed_get(session, url, runs):
    """Median and p95 milliseconds of `runs` GETs (after one warm-up), and the last answer."""
    session.get(url)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        answer = session.get(url)
        times.append((time.perf_counter() - started) * 1000)
        answer.raise_for_status()
    return statistics.median(times), percentile(times, 0.95), answer


def chart_url(base, device_id, since):
    """The address of a chart's request, as the page makes it."""
    query = urlencode(
        [("series", name) for name in SERIES] + [("points", 1000), ("since", since.isoformat())]
    )
    return f"{base}/devices/{device_id}/telemetry?{query}"


def measure_server(base, session, runs):
    """Page and chart reply times of the two seeded cars."""
    now = datetime.now(UTC)
    page = timed_get(session, f"{base}/devices/long-car", runs)
    default = timed_get(session, chart_url(base, "long-car", now - timedelta(hours=1)), runs)
    week = timed_get(session, chart_url(base, "week-car", now - timedelta(days=7)), runs)
    print(f"device page, {args_messages:,} messages:   median {page[0]:6.1f} ms  p95 {page[1]:6.1f} ms")
    body = default[2].json()
    points = len(body["series"][0]["points"])
    print(
        f"its default chart (1 h, 3 series): median {default[0]:6.1f} ms  p95 {default[1]:6.1f} ms"
        f"  ({points} points, buckets of {body['bucket_seconds']} s from {body['source']})"
    )
    body = week[2].json()
    points = len(body["series"][0]["points"])
    print(
        f"a week's range (3 series):         median {week[0]:6.1f} ms  p95 {week[1]:6.1f} ms"
        f"  ({points} points, buckets of {body['bucket_seconds']} s from {body['source']})"
    )


def measure_browser(base, cookie, runs):
    """Milliseconds from the page's response to its chart drawn, in Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        name, value = cookie.split("=", 1)
        context.add_cookies([{"name": name, "value": value, "url": base}])
        drawn, served = [], []
        for _ in range(runs + 1):
            page = context.new_page()
            page.goto(f"{base}/devices/long-car")
            page.wait_for_selector("#telemetry[data-drawn]", state="attached")
            timing = page.evaluate(
                "() => { const n = performance.getEntriesByType('navigation')[0];"
                " return [n.responseStart - n.requestStart, Number(document.getElementById('telemetry').dataset.drawn) - n.responseEnd]; }"
            )
            served.append(timing[0])
            drawn.append(timing[1])
            page.close()
        browser.close()
    served, drawn = served[1:], drawn[1:]  # the first load fills the browser's cache
    print(
        f"in Chromium: page served in median {statistics.median(served):.1f} ms; chart drawn "
        f"{statistics.median(drawn):.0f} ms after the response (p90 {percentile(drawn, 0.9):.0f} ms, "
        f"max {max(drawn):.0f} ms, {runs} loads)"
    )
    return context


def measure_live(stack, base, cookie, count):
    """Publish `count` messages at 10/s with the car's page open; publish-to-chart times."""
    from playwright.sync_api import sync_playwright

    publisher = stack.publisher()
    publisher.publish("live-car/telemetry", json.dumps({"speed": 0}), qos=1).wait_for_publish(5)
    time.sleep(2)  # the car and its series exist
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = browser.new_context()
        name, value = cookie.split("=", 1)
        context.add_cookies([{"name": name, "value": value, "url": base}])
        page = context.new_page()
        page.goto(f"{base}/devices/live-car#range=15m&series=telemetry%3A+speed")
        page.wait_for_selector("#live-status[data-state=live]")
        page.wait_for_selector("#telemetry[data-drawn]", state="attached")
        page.evaluate(
            "() => { window.drawnAt = []; new MutationObserver(() => window.drawnAt.push(Date.now()))"
            ".observe(document.getElementById('telemetry'), {attributes: true, attributeFilter: ['data-live']}); }"
        )
        sent = []
        for n in range(count):
            sent.append(time.time() * 1000)
            publisher.publish("live-car/telemetry", json.dumps({"speed": n + 1}), qos=1)
            time.sleep(0.1)
        deadline = time.monotonic() + 10
        while page.evaluate("window.drawnAt.length") < count and time.monotonic() < deadline:
            time.sleep(0.2)
        drawn = page.evaluate("window.drawnAt")
        browser.close()
    publisher.disconnect()
    latencies = [d - s for s, d in zip(sent, drawn, strict=False)]
    print(
        f"live points: {len(drawn)} of {count} on the chart; publish to chart p50 "
        f"{percentile(latencies, 0.5):.0f} ms, p99 {percentile(latencies, 0.99):.0f} ms, max {max(latencies):.0f} ms"
    )


args_messages = 0


def main():
    """Seed, start carweb, measure, print."""
    global args_messages
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--week-days", type=int, default=7)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--live", type=int, default=300)
    args = parser.parse_args()
    args_messages = args.messages
    with benchmark_stack() as stack:
        mongoengine.connect(host=stack.db_uri, tz_aware=True)
        prepare_database()  # as carweb's first start does: nothing to upgrade in what is seeded
        now = datetime.now(UTC).replace(microsecond=0)
        started = time.monotonic()
        seed_history("long-car", args.messages, now)
        seed_history("week-car", args.week_days * 86400, now)
        print(
            f"seeded {args.messages + args.week_days * 86400:,} messages in {time.monotonic() - started:.0f} s"
        )
        mongoengine.disconnect()
        base = stack.start_carweb()
        cookie = stack.logged_in_cookie()
        session = requests.Session()
        session.headers["Cookie"] = cookie
        measure_server(base, session, args.runs)
        measure_browser(base, cookie, 10)
        measure_live(stack, base, cookie, args.live)


if __name__ == "__main__":
    threading.excepthook = lambda hook: None  # paho's loop thread ends with the broker at exit
    main()
