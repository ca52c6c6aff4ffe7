"""Memory of the web worker while it serves a large firmware image, and the download speed.

Usage: python -m bench.download [--size-mb 100] [--parallel 1]
Starts SecantusDB, Mosquitto and carweb (gunicorn, gevent worker), uploads a random image
with the real CLI, starts a one-device rollout and downloads the image from the signed URL
of the update command: whole (checking its SHA-256), then ranged. The worker's resident
memory is sampled every 10 ms; the figure is its peak growth over its size before.
"""

import argparse
import hashlib
import json
import os
import threading
import time
import uuid

import requests

from bench.stack import benchmark_stack
from carweb.devstack import run_flask


def rss_kib(pid):
    """Resident memory of a process in KiB (from /proc)."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def worker_pid(master_pid):
    """The one gunicorn worker of the master process."""
    with open(f"/proc/{master_pid}/task/{master_pid}/children") as children:
        return int(children.read().split()[0])


class PeakSampler:
    """Samples a process's RSS in a thread and keeps the highest value."""

    def __init__(self, pid, interval=0.01):
        self.pid, self.interval = pid, interval
        self.peak = rss_kib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        """Sample until stopped."""
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def download(url, headers=None):
    """Stream a download; return (bytes received, SHA-256 hex, seconds)."""
    started, digest, size = time.perf_counter(), hashlib.sha256(), 0
    with requests.get(url, headers=headers or {}, stream=True, timeout=300) as response:
        response.raise_for_status()
        for block in response.iter_content(1024 * 1024):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest(), time.perf_counter() - started


def update_command(stack, size_mb):
    """Upload a random image and start a rollout to one device; return (command, image SHA-256)."""
    path = stack.workdir / "image.bin"
    digest = hashlib.sha256()
    with open(path, "wb") as image:
        for _ in range(size_mb):
            block = os.urandom(1024 * 1024)
            digest.update(block)
            image.write(block)
    title = f"bench-{uuid.uuid4().hex[:6]}"
    run_flask(stack.env, "firmware", "upload", str(path), "--title", title, "--version", "1.0", capture=True)
    device_id = str(uuid.uuid4())
    publisher = stack.publisher()
    publisher.publish(f"{device_id}/status", "online", qos=1).wait_for_publish(5)
    with stack.mongo() as mongo:
        db = mongo[stack.db_name]
        while db.devices.find_one({"device_id": device_id}) is None:
            time.sleep(0.05)
        run_flask(stack.env, "firmware", "rollout", title, "1.0", "--devices", device_id, capture=True)
        topic = f"{device_id}/firmware/update"
        while (command := db.messages.find_one({"device_id": device_id, "topic": topic})) is None:
            time.sleep(0.05)
    publisher.disconnect()
    return json.loads(command["payload"]), digest.hexdigest()


def measure(stack, size_mb, parallel):
    """Print the worker's memory growth while serving the image whole and in ranges."""
    stack.start_carweb(CARWEB_MAX_FIRMWARE_MB=str(size_mb + 1))
    command, expected = update_command(stack, size_mb)
    worker = worker_pid(stack.processes[-1].pid)
    url = command["url"]
    download(url, {"Range": "bytes=0-0"})  # warm up: first request imports and connects lazily
    before = rss_kib(worker)
    with PeakSampler(worker) as sampler:
        results = [None] * parallel
        threads = [
            threading.Thread(target=lambda n=n: results.__setitem__(n, download(url)))
            for n in range(parallel)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert all(r[1] == expected for r in results), "downloaded bytes differ from the uploaded image"
    seconds = max(r[2] for r in results)
    print(f"image: {size_mb} MiB, SHA-256 verified on {parallel} whole download(s)")
    print(f"whole download: {seconds:.1f} s, {parallel * size_mb / seconds:.0f} MiB/s")
    print(f"worker RSS before {before / 1024:.1f} MiB, peak {sampler.peak / 1024:.1f} MiB")
    print(f"worker memory growth while serving: {(sampler.peak - before) / 1024:.1f} MiB (limit 30)")
    last = 10 * 1024 * 1024
    with PeakSampler(worker) as sampler:
        size, _, seconds = download(url, {"Range": f"bytes=-{last}"})
    assert size == last
    print(
        f"ranged download of the last 10 MiB: {seconds:.2f} s, peak growth {(sampler.peak - before) / 1024:.1f} MiB"
    )


def main():
    """Parse arguments, start the stack, measure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=1, help="Simultaneous whole downloads.")
    args = parser.parse_args()
    with benchmark_stack() as stack:
        measure(stack, args.size_mb, args.parallel)


if __name__ == "__main__":
    main()
