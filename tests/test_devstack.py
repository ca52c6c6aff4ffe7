"""`make run` (`python -m carweb.devstack`): the whole local stack starts, works, stops and restarts."""

import html
import os
import re
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlparse

import requests

from carweb.config import ROOT
from carweb.devstack import free_port
from tests.conftest import csrf_token, wait_until

MOSQUITTO_PUB = "/usr/bin/mosquitto_pub"
STARTUP_TIMEOUT = 40
ADMIN_EMAIL = "ops@example.com"
ADMIN_PASSWORD = "configured admin password"
GENERATED = re.compile(r"created admin admin@localhost with password (\S+) \(shown once\)")
BROKER = re.compile(r"MQTT broker \(\w+\) at mqtt://127\.0\.0\.1:(\d+)")


class Stack:
    """One `python -m carweb.devstack` process, its output in a log file."""

    def __init__(self, data_dir, log_path, root=ROOT, **extra_env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {
            key: value
            for key, value in os.environ.items()
            if key != "SECRET_KEY" and not key.startswith(("MONGODB_", "MQTT_", "CARWEB_"))
        }
        env.update(
            CARWEB_DATA_DIR=str(data_dir),
            CARWEB_PORT=str(self.port),
            CARWEB_ACCESS_LOG="0",
            CARWEB_LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
            **extra_env,
        )
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "carweb.devstack"],
                env=env,
                cwd=root,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.children = set()

    def output(self):
        """Everything the stack printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_started(self):
        """Wait for the 'open http://...' line, failing early if the stack exits."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while f"open {self.url}" not in self.output():
            assert self.process.poll() is None, f"devstack exited early:\n{self.output()}"
            assert time.monotonic() < deadline, f"devstack did not start:\n{self.output()}"
            time.sleep(0.1)
        self.children = descendants(self.process.pid)

    def interrupt(self):
        """Ctrl-C the stack and wait for it to exit; return its exit code."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=30)

    def cleanup(self):
        """After a failure: stop the stack and anything it left running."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in alive(self.children):
            os.kill(pid, signal.SIGKILL)


def descendants(pid):
    """The PIDs of every process below `pid`, from /proc."""
    children = defaultdict(set)
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat_file.read_text()
        except OSError:
            continue
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        children[ppid].add(int(stat_file.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children[todo.pop()] - found:
            found.add(child)
            todo.append(child)
    return found


def alive(pids):
    """The PIDs among `pids` that still run (zombies count as gone)."""
    running = set()
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if text[text.rindex(")") + 2] != "Z":
            running.add(pid)
    return running


def command_lines(pids):
    """The command line of each PID, as one string each."""
    lines = []
    for pid in pids:
        try:
            lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return lines


def healthy(url):
    """The /healthz body once it answers 200 (the bridge connects after the port opens), else None."""
    response = requests.get(f"{url}/healthz", timeout=10)
    return response.json() if response.status_code == 200 else None


def log_in(url, email, password):
    """A requests session logged in through the form; fails when the login is refused."""
    session = requests.Session()
    token = csrf_token(session.get(f"{url}/login", timeout=10).text)
    response = session.post(
        f"{url}/login", data={"email": email, "password": password, "csrf_token": token}, timeout=10
    )
    assert urlparse(response.url).path == "/devices", f"login as {email} failed"
    return session


def publish(broker_port, device_id, payload):
    """Publish one QoS 1 message as the device with the mosquitto_pub command."""
    subprocess.run(
        [
            MOSQUITTO_PUB,
            "-h",
            "127.0.0.1",
            "-p",
            broker_port,
            "-q",
            "1",
            "-t",
            f"{device_id}/message",
            "-m",
            payload,
        ],
        check=True,
        timeout=10,
        capture_output=True,
    )


def assert_stops_cleanly(stack):
    """Ctrl-C stops the stack with exit code 0 and leaves none of its processes behind."""
    started = command_lines(stack.children)
    for name in ("secantusd", "mosquitto", "gunicorn"):
        assert any(name in line for line in started), f"no {name} among {started}"
    assert stack.interrupt() == 0, stack.output()
    assert "carweb: stopping" in stack.output()
    assert alive(stack.children) == set(), command_lines(alive(stack.children))


def test_devstack_runs_the_stack_stops_cleanly_and_keeps_data(tmp_path):
    """First run generates an admin and serves live ingest; a restart keeps data and sessions."""
    data_dir = tmp_path / "var"
    device_id = str(uuid.uuid4())
    first = Stack(data_dir, tmp_path / "first.log")
    try:
        first.wait_started()
        output = first.output()
        broker = BROKER.search(output)
        generated = GENERATED.search(output)
        assert broker, output
        assert generated, output

        health = wait_until(lambda: healthy(first.url), timeout=15)
        assert health["db"] == "ok"
        assert health["mqtt"] == "connected"
        home = requests.get(f"{first.url}/", allow_redirects=False, timeout=10)
        assert home.status_code == 302
        assert urlparse(home.headers["Location"]).path == "/login"

        session = log_in(first.url, "admin@localhost", generated.group(1))
        publish(broker.group(1), device_id, '{"speed_kmh": 88}')
        wait_until(lambda: device_id in session.get(f"{first.url}/devices", timeout=10).text, timeout=5)
        session.close()
        assert_stops_cleanly(first)
    finally:
        first.cleanup()

    assert stat.S_IMODE((data_dir / "secret_key").stat().st_mode) == 0o600
    assert (data_dir / "db").is_dir()

    second = Stack(
        data_dir,
        tmp_path / "second.log",
        CARWEB_ADMIN_EMAIL=ADMIN_EMAIL,
        CARWEB_ADMIN_PASSWORD=ADMIN_PASSWORD,
    )
    try:
        second.wait_started()
        assert not GENERATED.search(second.output()), second.output()
        admin = log_in(second.url, ADMIN_EMAIL, ADMIN_PASSWORD)
        assert device_id in admin.get(f"{second.url}/devices", timeout=10).text
        # The kept secret key means the first run's login is still valid.
        kept = session.get(f"{second.url}/devices/{device_id}", timeout=10)
        assert urlparse(kept.url).path == f"/devices/{device_id}"
        assert '"speed_kmh": 88' in html.unescape(kept.text)
        session.close()
        admin.close()
        assert_stops_cleanly(second)
    finally:
        second.cleanup()
