"""A fleet soak: 10,000 devices for ten minutes, a few bursting, one sending poison throughout.

Usage: python -m bench.fleet [--devices 10000] [--rate 1000] [--minutes 10] [--bursters 5]
    [--burst-size 1500] [--burst-every 60] [--watch 200]
Starts SecantusDB (on disk), Mosquitto and carweb (gunicorn, embedded bridge) on free
ports. The devices are `bench/loadgen.py` in its own process, one MQTT connection each:
first every device says hello once (the fleet appears), then the soak runs. Meanwhile a
Socket.IO client watches `--watch` steady devices, every burster and the device list, as
open pages would, and takes each message's publish-to-page latency from the `t` its
payload carries; another thread times the device list and device pages every few
seconds; the bridge process's memory is sampled. At the end every message the broker
acknowledged is looked for in the database: lost and stored twice must both be 0.
"""

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import requests
import socketio

from bench.stack import benchmark_stack, device_list_page

MEMORY_EVERY, PAGES_EVERY = 5.0, 3.0


def percentile(values, share):
    """The value below which `share` of the values lie (None for none)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else None


def worker_rss_mb(master_pid):
    """Resident memory (MiB) of gunicorn's worker, the process that runs the bridge."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    status = Path(f"/proc/{children[0]}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024


class Sampler(threading.Thread):
    """Calls `sample()` every `every` seconds until stopped; keeps (time, value) pairs."""

    def __init__(self, every, sample):
        super().__init__(daemon=True)
        self.every, self.sample, self.values = every, sample, []
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(self.every):
            try:
                self.values.append((time.time(), self.sample()))
            except Exception as exc:  # noqa: BLE001 - a failed sample is reported, the soak goes on
                self.values.append((time.time(), exc))


# A connection joins at most carweb.live.MAX_ROOMS rooms: like browser tabs, pages spread over connections.
PAGES_PER_CONNECTION = 40


class LivePages:
    """A Socket.IO client with the device list and some device pages open; latencies per device class."""

    def __init__(self, url, cookie):
        self.latencies = {"steady": [], "burst": []}
        self.started = time.time()
        self.by_minute = defaultdict(list)  # steady latencies by minute of the soak: does p99 drift?
        self.to_bridge = []  # steady: publish -> the bridge's received_at (device, broker, the bridge's reading)
        self.device_events = 0
        self.url, self.cookie, self.clients, self.list_open = url, cookie, [], False

    def connect(self):
        """One more Socket.IO connection, as one more browser tab would open."""
        client = socketio.Client(reconnection=False)
        client.on("messages", self.on_messages)
        client.on("devices", self.on_devices)
        client.connect(self.url, headers={"Cookie": self.cookie}, transports=["websocket"], wait_timeout=10)
        self.clients.append(client)
        return client

    def watch(self, device_ids):
        """Open the pages of these devices, PAGES_PER_CONNECTION on each connection, and the device list."""
        for first in range(0, len(device_ids), PAGES_PER_CONNECTION):
            client = self.connect()
            for device_id in device_ids[first : first + PAGES_PER_CONNECTION]:
                assert client.call("watch_device", {"device_id": device_id}, timeout=10)["ok"]
        if not self.list_open:  # one device list page, on the first connection
            assert (self.clients[0] if self.clients else self.connect()).call("watch_devices", timeout=10)
            self.list_open = True

    def on_messages(self, messages):
        """Latency of each telemetry message: now minus the publish time in its payload."""
        now = time.time()
        for message in messages:
            if not message["topic"].endswith("/telemetry"):
                continue
            kind = "burst" if "-burst-" in message["topic"] else "steady"
            published = json.loads(message["body"])["t"]
            self.latencies[kind].append((now - published) * 1000)
            if kind == "steady":
                self.by_minute[int((now - self.started) // 60)].append(self.latencies[kind][-1])
                received = datetime.fromisoformat(message["received_at"]).timestamp()
                self.to_bridge.append((received - published) * 1000)

    def on_devices(self, devices):
        """Count the device-list updates a fleet page receives."""
        self.device_events += len(devices)

    def close(self):
        """Close the pages."""
        for client in self.clients:
            client.disconnect()


def run_loadgen(stack, workdir, name, *args):
    """Start `bench.loadgen` as its own process; return it and the path of its summary."""
    out = Path(workdir) / f"{name}.json"
    command = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--port",
        str(stack.mqtt_port),
        "--out",
        str(out),
        *args,
    ]
    log = open(Path(workdir) / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps it open
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), out


def wait_for_stored(stack, count, timeout):
    """Wait until carweb's stored counter reaches `count`; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if stack.metrics().get("carweb_messages_stored_total", 0) >= count:
            return time.monotonic() - started
        time.sleep(0.5)
    return None


def warm_up(stack, workdir, args, prefix):
    """Every device says hello once (on `<id>/hello`), so the soak starts with the fleet known."""
    started = time.monotonic()
    before = stack.metrics().get("carweb_messages_stored_total", 0)
    fleet = ["--devices", str(args.devices), "--prefix", prefix, "--bursters", "0", "--poison", "0"]
    fleet += ["--msg-id-share", "0"]  # the soak numbers its messages from 0 again
    # Each device's first message comes within its period (2 s here), so 2.5 s reach them all.
    pace = ["--topic", "hello", "--rate", str(args.devices / 2), "--duration", "2.5"]
    process, out = run_loadgen(stack, workdir, "hello", *fleet, *pace)
    process.wait()
    sent = json.loads(out.read_text())["acked"]
    wait_for_stored(stack, before + sent, timeout=600)
    with stack.mongo() as mongo:  # and their documents written (the bridge writes them behind the stream)
        devices = mongo[stack.db_name].devices
        while devices.count_documents({"device_id": {"$regex": f"^{prefix}-"}}) < args.devices:
            time.sleep(1)
    print(
        f"warm-up: {args.devices} devices connected, said hello and were stored in {time.monotonic() - started:.0f} s"
    )


def time_pages(base, cookie, pages):
    """One round of page timings: {label: milliseconds of the whole request}.

    A device page that is not there yet (a burster that has not spoken) is left out of
    the round; any other answer than 200 fails it.
    """
    timings = {}
    for label, path in pages.items():
        response = requests.get(base + path, headers={"Cookie": cookie}, timeout=30)
        if response.status_code == 404 and path.startswith("/devices/"):
            continue
        assert response.status_code == 200, (path, response.status_code)
        timings[label] = response.elapsed.total_seconds() * 1000
    return timings


def account(stack, summary):
    """(lost, stored twice, stored) of the soak's telemetry, from the database against the acks."""
    acked = {}
    for device_id, report in summary["devices"].items():
        if "-poison-" in device_id:
            continue  # counted apart: its payloads are not telemetry
        unacked = set(report["unacked_n"])
        acked[device_id] = {n for n in range(report["published"]) if n not in unacked}
    stored = Counter()
    with stack.mongo() as mongo:
        query = {"topic": {"$regex": "/telemetry$"}}
        for doc in mongo[stack.db_name].messages.find(query, {"device_id": 1, "data.n": 1}):
            if doc.get("data") and "n" in doc["data"]:
                stored[(doc["device_id"], doc["data"]["n"])] += 1
    lost = sum(1 for device_id, numbers in acked.items() for n in numbers if (device_id, n) not in stored)
    twice = sum(count - 1 for count in stored.values() if count > 1)
    return lost, twice, sum(stored.values())


def soak(stack, workdir, args):
    """Warm up, run the soak with its observers, and print the figures."""
    base = stack.start_carweb(CARWEB_METRICS_TOKEN="bench")
    cookie = stack.logged_in_cookie()
    prefix = f"soak{int(time.time()) % 100000}"
    warm_up(stack, workdir, args, prefix)
    master = stack.processes[-1].pid
    pages = {
        "/devices": "/devices",
        "/devices, page 150": device_list_page(
            lambda path: requests.get(base + path, headers={"Cookie": cookie}, timeout=30).text, 150
        ),
        "steady device page": f"/devices/{prefix}-1",
        "burster's device page": f"/devices/{prefix}-burst-0",
        "search": f"/devices?q={prefix}-99",
    }
    live = LivePages(base, cookie)
    step = max(args.devices // max(args.watch, 1), 1)
    live.watch([f"{prefix}-{n}" for n in range(0, args.devices, step)][: args.watch])
    live.watch([f"{prefix}-burst-{k}" for k in range(args.bursters)])
    memory = Sampler(
        MEMORY_EVERY, lambda: (worker_rss_mb(master), stack.metrics().get("carweb_devices_unflushed", 0))
    )
    timings = Sampler(PAGES_EVERY, lambda: time_pages(base, cookie, pages))
    start_memory = worker_rss_mb(master)
    memory.start()
    stored_before = stack.metrics().get("carweb_messages_stored_total", 0)
    fleet = ["--devices", str(args.devices), "--prefix", prefix, "--rate", str(steady_rate(args))]
    fleet += ["--bursters", str(args.bursters), "--burst-size", str(args.burst_size)]
    fleet += ["--burst-every", str(args.burst_every), "--duration", str(args.minutes * 60)]
    process, out = run_loadgen(stack, workdir, "soak", *fleet)
    if not args.no_pages:
        timings.start()
    try:
        process.wait()
    finally:
        if process.poll() is None:
            process.terminate()
    summary = json.loads(out.read_text())
    drained = wait_for_stored(stack, stored_before + summary["acked"], timeout=300)
    timings.stopped.set()
    time.sleep(2)  # the last live events
    memory.stopped.set()
    live.close()
    report(args, summary, live, memory, timings, start_memory, worker_rss_mb(master), drained, stack)


def steady_rate(args):
    """Messages/s of the steady devices: the fleet's rate less the bursts' and the poison's average."""
    return max(args.rate - args.bursters * args.burst_size / args.burst_every - 1, 1)


def report(args, summary, live, memory, timings, start_memory, end_memory, drained, stack):
    """Print the soak's figures."""
    lost, twice, stored = account(stack, summary)
    metrics = stack.metrics()
    poison = summary["poison"]
    print(
        f"soak: {summary['published']} messages in {summary['publish_seconds']:.0f} s "
        f"({summary['messages_per_s']:.0f} msg/s) from {args.devices} devices, {args.bursters} bursters, "
        f"1 poison device; {summary['reconnects']} reconnects; load generator CPU {summary['cpu_seconds']:.0f} s"
    )
    print(
        f"messages lost: {lost}   stored twice: {twice}   (telemetry stored: {stored}, "
        f"drained {drained if drained is None else round(drained, 1)} s after the last publish)"
    )
    with stack.mongo() as mongo:
        poison_stored = mongo[stack.db_name].messages.count_documents(
            {"topic": {"$regex": "-poison-[0-9]+/"}}
        )
    print(
        f"poison: {len(poison)} sent, {sum(p['acked'] for p in poison)} acked by the broker, {poison_stored} stored; carweb "
        f"stored raw {metrics.get('carweb_messages_stored_raw_total', 0):.0f}, "
        f"dropped {sum(v for k, v in metrics.items() if k.startswith('carweb_messages_dropped_total')):.0f}, "
        f"bridge restarts {metrics.get('carweb_bridge_restarts_total', 0):.0f}"
    )
    for kind, values in live.latencies.items():
        print(
            f"publish -> live page, {kind:6s}: {len(values):7d} messages  p50 {percentile(values, 0.5) or 0:7.1f} ms"
            f"  p99 {percentile(values, 0.99) or 0:7.1f} ms  max {max(values, default=0):8.1f} ms"
        )
    print(
        f"  of which publish -> the bridge's received_at, steady: p50 {percentile(live.to_bridge, 0.5) or 0:.1f} ms"
        f"  p99 {percentile(live.to_bridge, 0.99) or 0:.1f} ms (the rest is carweb's pipeline and Socket.IO)"
    )
    minutes = "  ".join(f"{percentile(v, 0.99):.0f}" for _, v in sorted(live.by_minute.items()))
    print(f"  steady p99 minute by minute, ms: {minutes}")
    print(f"device-list updates received by the open list page: {live.device_events}")
    samples = [value[0] for _, value in memory.values if isinstance(value, tuple)]
    unflushed = [value[1] for _, value in memory.values if isinstance(value, tuple)]
    print(
        f"bridge process memory: start {start_memory:.1f} MiB, end {end_memory:.1f} MiB, "
        f"max {max(samples, default=end_memory):.1f} MiB, growth {end_memory - start_memory:+.1f} MiB"
    )
    per_minute = samples[:: max(int(60 / MEMORY_EVERY), 1)]
    print("  minute by minute, MiB: " + "  ".join(f"{value:.0f}" for value in per_minute))
    print(
        f"devices waiting for their document's write, sampled every {MEMORY_EVERY:g} s: median "
        f"{percentile(unflushed, 0.5) or 0:.0f}, max {max(unflushed, default=0):.0f}"
    )
    rounds = [value for _, value in timings.values if isinstance(value, dict)]
    failures = len(timings.values) - len(rounds)
    for label in dict.fromkeys(label for r in rounds for label in r):
        values = [r[label] for r in rounds if label in r]
        print(
            f"  {label:24s} during the soak: median {percentile(values, 0.5):7.1f} ms  p95 "
            f"{percentile(values, 0.95):7.1f} ms  max {max(values):7.1f} ms  ({len(values)} requests)"
        )
    for stage, (count, p50, p99) in sorted(stage_percentiles(metrics).items()):
        print(
            f"  bridge stage {stage:7s}: {count} batches, p50 <= {p50 * 1000:g} ms, p99 <= {p99 * 1000:g} ms"
        )
    count, p50, p99 = histogram_percentiles(metrics, "carweb_ingest_live_seconds_bucket{")
    print(
        f"  arrival at the bridge -> sent to live pages, all {count} messages: "
        f"p50 <= {p50 * 1000:g} ms, p99 <= {p99 * 1000:g} ms"
    )
    if failures:
        errors = Counter(repr(value)[:160] for _, value in timings.values if not isinstance(value, dict))
        print(f"  page timing rounds that failed: {failures}: {dict(errors)}")


def stage_percentiles(metrics):
    """{stage: (count, p50 bound, p99 bound)} from carweb's per-batch stage histogram (bucket bounds, s)."""
    stages = {
        re.search(r'stage="([^"]+)"', key)[1]
        for key in metrics
        if key.startswith("carweb_ingest_stage_seconds_bucket")
    }
    return {
        stage: histogram_percentiles(metrics, "carweb_ingest_stage_seconds_bucket{", f'stage="{stage}"')
        for stage in stages
    }


def histogram_percentiles(metrics, prefix, label=""):
    """(count, p50 bound, p99 bound) of a Prometheus histogram's buckets (seconds)."""
    buckets = sorted(
        (float(re.search(r'le="([^"]+)"', key)[1]), value)
        for key, value in metrics.items()
        if key.startswith(prefix) and label in key
    )
    total = buckets[-1][1] if buckets else 0
    bound = {share: next((le for le, n in buckets if n >= share * total), 0) for share in (0.5, 0.99)}
    return int(total), bound[0.5], bound[0.99]


def main():
    """Parse arguments, start the stack and soak."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1000, help="messages/s of the whole fleet")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--bursters", type=int, default=5)
    parser.add_argument("--burst-size", type=int, default=1500)
    parser.add_argument("--burst-every", type=float, default=60)
    parser.add_argument("--watch", type=int, default=200, help="steady devices whose pages are open")
    parser.add_argument("--no-pages", action="store_true", help="do not time pages during the soak")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench.fleet: terminated"))  # so the stack is stopped
    with benchmark_stack() as stack, tempfile.TemporaryDirectory(prefix="carweb-soak-") as workdir:
        soak(stack, workdir, args)


if __name__ == "__main__":
    main()
