"""Reloads without errors: `kill -HUP` of a gunicorn master and a rolling restart of web processes, behind nginx."""

import json
import os
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path

import pymongo
import pytest
import requests

from carweb.devstack import device_client, run_flask, stop_processes
from tests.conftest import PASSWORD, start_gunicorn, wait_until
from tests.nginx_support import browser_login, start_nginx

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="needs nginx (Debian package nginx)")


class PageLoop:
    """A browser asking for the device list through nginx, over and over, recording every answer."""

    def __init__(self, nginx):
        self.url = f"{nginx.url}/devices"
        self.session = browser_login(nginx, "reload@example.com")
        self.answers, self.running = [], True
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while self.running:
            try:
                response = self.session.get(self.url, timeout=30, allow_redirects=False)
                self.answers.append(response.status_code)
            except requests.RequestException as exc:
                self.answers.append(repr(exc))

    def __enter__(self):
        assert self.session.get(self.url, timeout=10, allow_redirects=False).status_code == 200, (
            "not logged in"
        )
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join(60)

    def failures(self):
        """Every answer that was not the page."""
        return [answer for answer in self.answers if answer != 200]


def worker_pids(master):
    """The gunicorn workers of a master, from /proc."""
    return set(map(int, Path(f"/proc/{master.pid}/task/{master.pid}/children").read_text().split()))


def test_hup_of_a_gunicorn_master_loses_no_request_and_no_message(web_server, services, tmp_path):
    """The embedded bridge moves to the new worker; pages and stored messages carry on."""
    db_name = f"hup_{uuid.uuid4().hex[:8]}"
    url, master, env = web_server(db_name, CARWEB_PROXY_HOPS="1")
    run_flask(
        env, "create-user", "reload@example.com", "--password-stdin", capture=True, stdin=PASSWORD + "\n"
    )
    nginx = start_nginx(tmp_path / "nginx", [url.removeprefix("http://")])
    device = f"hup-{uuid.uuid4().hex[:8]}"
    publisher = device_client(services.mqtt_port, "hup")
    try:
        with PageLoop(nginx) as loop:
            old = worker_pids(master)
            sent = []
            for n in range(600):
                sent.append(publisher.publish(f"{device}/telemetry", json.dumps({"n": n}), qos=1))
                if n == 200:
                    os.kill(master.pid, signal.SIGHUP)
                time.sleep(0.005)
            wait_until(lambda: (now := worker_pids(master)) and not now & old, timeout=30)
            time.sleep(1)
        for info in sent:
            info.wait_for_publish(10)
        with pymongo.MongoClient(env["MONGODB_URI"]) as mongo:
            messages = mongo[db_name].messages
            wait_until(lambda: messages.count_documents({"device_id": device}) >= 600, timeout=60)
            time.sleep(1)
            stored = sorted(json.loads(doc["text"])["n"] for doc in messages.find({"device_id": device}))
        assert stored == list(range(600))
        assert len(loop.answers) > 20 and loop.failures() == []
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        stop_processes([nginx.process])


def test_a_rolling_restart_of_two_web_processes_fails_no_request(web_server, redis_url, tmp_path):
    """Each process in turn stops (gracefully) and starts again on its port; nginx sends requests to the other."""
    db_name = f"rolling_{uuid.uuid4().hex[:8]}"
    shared = dict(
        CARWEB_BRIDGE="off", SOCKETIO_MESSAGE_QUEUE=redis_url, REDIS_URL=redis_url, CARWEB_PROXY_HOPS="1"
    )
    webs = [web_server(db_name, **shared) for _ in range(2)]
    run_flask(
        webs[0][2],
        "create-user",
        "reload@example.com",
        "--password-stdin",
        capture=True,
        stdin=PASSWORD + "\n",
    )
    nginx = start_nginx(tmp_path / "nginx", [url.removeprefix("http://") for url, _, _ in webs])
    restarted = []
    try:
        with PageLoop(nginx) as loop:
            for n, (_, master, env) in enumerate(webs):
                time.sleep(1)
                stop_processes([master])  # SIGTERM: the listener closes, open requests finish
                restarted.append(start_gunicorn(env, tmp_path / f"restarted-{n}.log"))
            time.sleep(1)
        assert len(loop.answers) > 20 and loop.failures() == []
    finally:
        stop_processes([nginx.process, *restarted])
