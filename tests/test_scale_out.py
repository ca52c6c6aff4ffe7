"""Scale-out: two web processes and two external bridges on a shared subscription, Redis and Mosquitto, behind nginx."""

import json
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
from types import SimpleNamespace

import pymongo
import pytest

from carweb.config import ROOT
from carweb.devstack import device_client, free_port, run_flask, stop_processes
from carweb.simulator import Fleet, simulated_device_id
from tests.conftest import PASSWORD, server_env, wait_until
from tests.nginx_support import browser_login, browser_socket, start_nginx
from tests.ota_support import job_of, jobs_of, start_rollout, upload_image, wait_for_devices, wait_for_rollout
from tests.ws_support import connect, device_token

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="needs nginx (Debian package nginx)")
DEVICES = 25  # odd: the broker alternates between the bridges, so each device's messages go to both
PER_DEVICE = 80  # 2,000 messages in all


def start_bridge(env, log_path):
    """`flask --app carweb bridge run` as an operator starts it; returns once it has subscribed."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "carweb", "bridge", "run"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: "connected to the broker" in log_path.read_text(errors="replace"), timeout=30)
        # gevent patched the standard library before anything imported ssl or sockets.
        assert "MonkeyPatchWarning" not in log_path.read_text(errors="replace")
    except AssertionError:
        stop_processes([process])
        raise
    return process


@pytest.fixture
def fleet_behind_nginx(services, web_server, redis_url, tmp_path):
    """nginx -> two web processes; two bridges sharing `$share/<group>/+/#`; Redis between them all."""
    db_name = f"scale_{uuid.uuid4().hex[:8]}"
    group = f"carweb-{uuid.uuid4().hex[:6]}"
    shared = dict(
        CARWEB_BRIDGE="external",
        SOCKETIO_MESSAGE_QUEUE=redis_url,
        REDIS_URL=redis_url,
        MQTT_SHARED_GROUP=group,
        CARWEB_PROXY_HOPS="1",
        CARWEB_SECURE_COOKIES="1",
    )
    webs = [web_server(db_name, **shared) for _ in range(2)]
    bridges = []
    try:
        for n in range(2):
            env = server_env(services, db_name, free_port(), **shared)
            env.update(CARWEB_LOG_LEVEL="INFO", MQTT_CLIENT_ID=f"{group}-bridge-{n}")
            bridges.append(start_bridge(env, tmp_path / f"bridge-{n}.log"))
        env = webs[0][2]
        run_flask(
            env, "create-user", "scale@example.com", "--password-stdin", capture=True, stdin=PASSWORD + "\n"
        )
        nginx = start_nginx(tmp_path / "nginx", [url.removeprefix("http://") for url, _, _ in webs])
        with pymongo.MongoClient(env["MONGODB_URI"]) as mongo:
            yield nginx, mongo[db_name], bridges, webs
        stop_processes([nginx.process])
    finally:
        stop_processes(bridges)


def test_two_bridges_store_2000_messages_once_and_a_page_sees_each_once(fleet_behind_nginx, services):
    """Whichever bridge stores a message, it is stored once and reaches the watching page once."""
    nginx, db, bridges, _ = fleet_behind_nginx
    devices = [f"scale-{uuid.uuid4().hex[:8]}" for _ in range(DEVICES)]
    watched = devices[0]
    live = queue.Queue()
    client = browser_socket(browser_login(nginx, "scale@example.com"), nginx.url)
    client.on("messages", live.put)
    try:
        assert client.call("watch_device", {"device_id": watched, "after": None}, timeout=10)["ok"]
        publisher = device_client(services.mqtt_port, "scale")
        try:
            sent = [
                publisher.publish(f"{devices[n % DEVICES]}/telemetry", json.dumps({"n": n}), qos=1)
                for n in range(DEVICES * PER_DEVICE)
            ]
            for info in sent:
                info.wait_for_publish(30)
        finally:
            publisher.disconnect()
            publisher.loop_stop()
        query = {"device_id": {"$in": devices}}
        wait_until(lambda: db.messages.count_documents(query) >= DEVICES * PER_DEVICE, timeout=90)
        time.sleep(1)  # anything stored twice would show up by now
        docs = list(db.messages.find(query, {"text": 1, "device_id": 1, "seq": 1}))
        # Both bridges stored messages: an ObjectId's bytes 4-8 are random per process.
        assert len({doc["_id"].binary[4:9] for doc in docs}) == 2
        assert sorted(json.loads(doc["text"])["n"] for doc in docs) == list(range(DEVICES * PER_DEVICE))
        # Each message has its own number in its device's history, whichever bridge numbered it.
        assert len({(doc["device_id"], doc["seq"]) for doc in docs}) == len(docs)

        expected = sorted(n for n in range(DEVICES * PER_DEVICE) if n % DEVICES == 0)
        seen = []

        def page_has_all():
            while not live.empty():
                seen.extend(json.loads(m["body"])["n"] for m in live.get())
            return len(seen) >= len(expected)

        wait_until(page_has_all, timeout=30)
        time.sleep(1)
        page_has_all()
        assert sorted(seen) == expected  # each once: none missing, none twice
        assert all(bridge.poll() is None for bridge in bridges)
    finally:
        client.disconnect()


def socket_car(url, server, prefix):
    """One simulated car over the device WebSocket at `url`, running in a thread: (its id, its fleet, thread)."""
    device = simulated_device_id(prefix, 0)
    cars = Fleet(url, 1, 0.2, prefix=prefix, sockets={device: device_token(server.db(), device)})
    thread = threading.Thread(target=cars.run, daemon=True)
    thread.start()
    return device, cars, thread


def test_a_rollout_reaches_socket_cars_on_either_web_process_through_nginx(
    fleet_behind_nginx, fleet, tmp_path, monkeypatch
):
    """Socket cars through nginx (wss) and on each web process, MQTT cars, and one socket car away at first."""
    nginx, db, _, webs = fleet_behind_nginx
    monkeypatch.setenv("SSL_CERT_FILE", str(nginx.cert))  # the cars trust the test's certificate
    server = SimpleNamespace(env=webs[0][2], db=lambda: db)
    title, version, _, _, _ = upload_image(server, tmp_path)
    running = [socket_car(url, server, uuid.uuid4().hex) for url in (nginx.url, webs[0][0], webs[1][0])]
    mqtt_cars = fleet(2)
    away_prefix = uuid.uuid4().hex
    away = simulated_device_id(away_prefix, 0)
    token = device_token(db, away)
    connect(nginx.url, token, sslopt={"ca_certs": str(nginx.cert)}).close()  # its session exists
    devices = [device for device, _, _ in running] + mqtt_cars + [away]
    try:
        wait_for_devices(server, devices)
        rollout_id = start_rollout(server, title, version, devices, "--waves", "100")
        wait_until(lambda: (job_of(server, away) or {}).get("state") == "SENT")
        returning = Fleet(nginx.url, 1, 0.2, prefix=away_prefix, sockets={away: token})
        running.append((away, returning, threading.Thread(target=returning.run, daemon=True)))
        running[-1][2].start()
        wait_for_rollout(server, rollout_id, "COMPLETED", timeout=90)
    finally:
        for _, cars, thread in running:
            cars.stop()
            thread.join(15)
    jobs = jobs_of(server, rollout_id)
    assert {j["device_id"]: j["state"] for j in jobs} == dict.fromkeys(devices, "UPDATED")
