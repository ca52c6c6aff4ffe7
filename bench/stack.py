"""A throw-away SecantusDB + Mosquitto + carweb for benchmarks, on free ports."""

import os
import re
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

import pymongo
import requests

from carweb.devstack import (
    device_client,
    free_port,
    mongodb_uri,
    run_flask,
    start_mosquitto,
    start_secantus,
    start_web,
    stop_processes,
)


class Stack:
    """Addresses of the benchmark's services."""

    def __init__(self, workdir, db_port, mqtt_port):
        self.workdir = Path(workdir)
        self.db_port = db_port
        self.mqtt_port = mqtt_port
        self.db_name = "carweb_bench"
        self.db_uri = mongodb_uri(db_port, self.db_name)
        self.web_port = None
        self.processes = []

    def mongo(self):
        """A pymongo client of the benchmark database (tz-aware, like carweb's)."""
        return pymongo.MongoClient(self.db_uri, tz_aware=True)

    def start_carweb(self, **env):
        """Start carweb with the embedded bridge; return its base URL."""
        self.web_port = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_", "MQTT_", "CARWEB_"))}
        base.update(
            SECRET_KEY="bench",
            MONGODB_URI=self.db_uri,
            MQTT_URL=f"mqtt://127.0.0.1:{self.mqtt_port}",
            MQTT_CLIENT_ID=f"carweb-bench-{uuid.uuid4().hex[:6]}",
            CARWEB_PORT=str(self.web_port),
            CARWEB_ACCESS_LOG="0",
            CARWEB_LOG_LEVEL="WARNING",
            CARWEB_METRICS_TOKEN="bench",
        )
        # BENCH_CARWEB_ENV="NAME=VALUE ..." tries other carweb settings in any benchmark.
        base.update(item.split("=", 1) for item in os.environ.get("BENCH_CARWEB_ENV", "").split())
        base.update(env)
        with open(self.workdir / "carweb.log", "ab") as log:
            self.processes.append(start_web(base, log_file=log))
        self.env = base
        return f"http://127.0.0.1:{self.web_port}"

    def logged_in_cookie(self, email="bench@example.com", password="bench-password"):
        """Create a user with the real CLI, log in through the form; return the Cookie header."""
        run_flask(self.env, "create-user", email, "--password-stdin", capture=True, stdin=password + "\n")
        session = requests.Session()
        login = session.get(f"http://127.0.0.1:{self.web_port}/login").text
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', login).group(1)
        session.post(
            f"http://127.0.0.1:{self.web_port}/login",
            data={"email": email, "password": password, "csrf_token": token},
        )
        return "; ".join(f"{c.name}={c.value}" for c in session.cookies)

    def metrics(self):
        """carweb's Prometheus counters as {name: value}."""
        import urllib.request

        request = urllib.request.Request(
            f"http://127.0.0.1:{self.web_port}/metrics", headers={"Authorization": "Bearer bench"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            lines = response.read().decode().splitlines()
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in lines
            if line and not line.startswith("#")
        }

    def publisher(self):
        """A connected paho client with a large in-flight window, its loop running."""
        return device_client(self.mqtt_port, "bench-pub")


@contextmanager
def benchmark_stack():
    """SecantusDB on disk (as in production use) and Mosquitto, stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="carweb-bench-") as workdir:
        stack = Stack(workdir, free_port(), free_port())
        logs = open(Path(workdir) / "services.log", "ab")  # noqa: SIM115 - closed below
        try:
            stack.processes.append(start_secantus(stack.db_port, Path(workdir) / "db", log_file=logs))
            stack.processes.append(
                start_mosquitto(stack.mqtt_port, Path(workdir) / "mosquitto", log_file=logs)
            )
            yield stack
        finally:
            stop_processes(stack.processes)
            logs.close()


def on_database(measure, size, uri, name):
    """`measure(size, uri, database process)` on `uri`, or on a SecantusDB started for it and stopped after."""
    if uri:
        measure(size, uri, None)
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as storage:
        process = start_secantus(port, storage)
        try:
            measure(size, mongodb_uri(port, name), process)
        finally:
            stop_processes([process])


def device_list_page(get_html, pages):
    """The address of page `pages` of the device list (or its last), following Older links with `get_html(path)`."""
    path = "/devices"
    for _ in range(pages - 1):
        html = get_html(path)
        if 'id="older-devices" href="' not in html:
            break
        path = html.split('id="older-devices" href="')[1].split('"')[0].replace("&amp;", "&")
    return path
