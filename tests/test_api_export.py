"""An export of 100,000 messages streams from a real gunicorn worker in constant memory."""

import base64
import csv
import io
import json
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import mongoengine
import requests

from carweb.bridge.documents import build_documents
from carweb.models import ApiToken, User
from tests.conftest import PASSWORD
from tests.ingest_support import MAX_PAYLOAD, ingest

MESSAGES = 100_000
BATCH = 2000
MAX_GROWTH = 30 * 1024 * 1024
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def telemetry(rng, n):
    """What a car sends: mostly JSON telemetry, some log text with any character, some raw frames."""
    kind = n % 20
    if kind == 0:
        return rng.randbytes(rng.randint(1, 2048))
    if kind == 1:
        return f'ignition "on", odo={n}; \u00e9\U0001f697\nsecond line,=cmd'.encode()
    return json.dumps({"n": n, "speed": rng.random() * 130, "gps": [rng.random(), rng.random()]}).encode()


def seed(device_id, count):
    """Store `count` messages of one device, a second apart, as the bridge stores them."""
    rng = random.Random(7)
    for start in range(0, count, BATCH):
        arrivals = [
            (
                SimpleNamespace(
                    topic=f"{device_id}/telemetry", payload=telemetry(rng, n), qos=1, retain=False
                ),
                T0 + timedelta(seconds=n),
            )
            for n in range(start, min(start + BATCH, count))
        ]
        ingest(build_documents(arrivals, MAX_PAYLOAD))


def rss(pid):
    """Resident memory of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def worker_of(master):
    """The pid of the one gunicorn worker of `master`."""
    children = Path(f"/proc/{master.pid}/task/{master.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


class PeakMemory:
    """Samples a process's resident memory every 10 ms while in use; `peak` is the highest seen."""

    def __init__(self, pid):
        self.pid, self.peak, self.running = pid, rss(pid), True
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self):
        while self.running:
            self.peak = max(self.peak, rss(self.pid))
            time.sleep(0.01)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()


def test_an_export_of_100000_messages_grows_the_worker_by_at_most_30_mb(app, web_server):
    """CSV and NDJSON of the whole history: every message arrives, the worker's memory stays flat."""
    seed("big-car", MESSAGES)
    seed("small-car", 50)
    secret = ApiToken.create(User.create_or_update("export@example.com", PASSWORD, role="viewer"), "export")[
        1
    ]
    url, master, _ = web_server(mongoengine.get_db().name, CARWEB_BRIDGE="off")
    headers = {"Authorization": f"Bearer {secret}"}
    export = f"{url}/api/v1/devices/{{}}/messages/export?format={{}}"
    for fmt in ("csv", "ndjson"):  # warm up: the code paths of both formats loaded once
        assert requests.get(export.format("small-car", fmt), headers=headers, timeout=30).status_code == 200
    worker = worker_of(master)
    for fmt in ("csv", "ndjson"):
        before = rss(worker)
        lines, tail = 0, b""
        with (
            PeakMemory(worker) as memory,
            requests.get(
                export.format("big-car", fmt), headers=headers, stream=True, timeout=120
            ) as response,
        ):
            assert response.status_code == 200
            for chunk in response.iter_content(64 * 1024):
                data = tail + chunk
                lines += data.count(b"\n")
                tail = data[data.rfind(b"\n") + 1 :]
        growth = memory.peak - before
        print(f"{fmt}: {lines} lines, worker {before / 2**20:.1f} MiB, peak +{growth / 2**20:.1f} MiB")
        assert growth <= MAX_GROWTH, f"{fmt}: the worker grew by {growth / 2**20:.1f} MiB"
        assert tail == b""  # the body ends with a whole line
    # NDJSON: one line per message. (CSV has more: log text holds newlines inside quoted fields.)
    assert lines == MESSAGES


def test_csv_rows_hold_what_the_devices_sent(app):
    """The export of what `seed` stores reads back as the payloads that were sent, bytes as base64."""
    seed("csv-car", 40)
    client = app.test_client()
    secret = ApiToken.create(User.create_or_update("csv@example.com", PASSWORD, role="viewer"), "csv")[1]
    body = client.get(
        "/api/v1/devices/csv-car/messages/export", headers={"Authorization": f"Bearer {secret}"}
    )
    rows = list(csv.DictReader(io.StringIO(body.get_data(as_text=True), newline="")))
    rng = random.Random(7)
    for n, row in enumerate(rows):
        sent = telemetry(rng, n)
        if row["encoding"] == "base64":
            assert base64.b64decode(row["payload"]) == sent
        else:
            assert row["payload"].encode() == sent
    assert len(rows) == 40
