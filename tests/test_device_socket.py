"""The device WebSocket against the real stack: handshake, commands kept for a device away, limits."""

import json
import threading
import time
import uuid

import pymongo
import pytest
import requests
import websocket

from carweb.simulator import Fleet, simulated_device_id
from tests.conftest import wait_until
from tests.ota_support import (
    job_of,
    jobs_of,
    outbound,
    start_rollout,
    upload_image,
    wait_for_devices,
    wait_for_rollout,
)
from tests.ws_support import connect, device_token, frames_until_closed, handshake_status, message


@pytest.fixture
def sockets():
    """`sockets(url, secret)` connects a device socket that is closed after the test, whatever happens."""
    opened = []

    def open_socket(url, secret):
        opened.append(connect(url, secret))
        return opened[-1]

    yield open_socket
    for ws in opened:
        ws.shutdown()


def publish_command(publisher, device_id, subtopic, payload):
    """Publish a command to the device as carweb does (QoS 1) and wait for the broker."""
    publisher.publish(f"{device_id}/firmware/{subtopic}", json.dumps(payload), qos=1).wait_for_publish(5)


def test_wrong_and_revoked_tokens_are_refused_at_the_handshake(live_server, device_id, sockets):
    """401 before any upgrade for a wrong, missing or revoked token; a plain request is told what to do."""
    db = live_server.db()
    secret = device_token(db, device_id)
    assert handshake_status(live_server.url, "cwd_" + "x" * 43) == 401
    assert handshake_status(live_server.url, secret.replace("cwd_", "cwt_")) == 401
    ws = sockets(live_server.url, secret)
    assert ws.ready == {
        "device": device_id,
        "limits": {
            "max_frame_bytes": 1048576,
            "messages_per_second": 100.0,
            "burst": 1000,
            "max_unacked": 1000,
            "ping_seconds": 25,
        },
    }
    ws.close()
    plain = requests.get(f"{live_server.url}/devices/ws", headers={"Authorization": f"Bearer {secret}"})
    assert plain.status_code == 400 and "WebSocket" in plain.json()["error"]
    anonymous = requests.get(f"{live_server.url}/devices/ws")
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    db.device_tokens.delete_one({"device_id": device_id})  # revoked
    assert handshake_status(live_server.url, secret) == 401
    query_string = requests.get(f"{live_server.url}/devices/ws?token={secret}")
    assert query_string.status_code == 401


def test_commands_wait_for_a_device_away_and_a_new_socket_replaces_the_old(
    live_server, publisher, device_id, sockets
):
    """Commands come down the socket; while away they wait; unacked ones come again; the newest socket wins."""
    secret = device_token(live_server.db(), device_id)
    ws = sockets(live_server.url, secret)
    publish_command(publisher, device_id, "cancel", {"job": "live"})
    live = json.loads(ws.recv())
    assert live["topic"] == "firmware/cancel" and live["payload"] == {"job": "live"}
    ws.send(json.dumps({"ack": live["id"]}))
    ws.close()
    time.sleep(0.5)  # carweb has closed the session's connection

    publish_command(publisher, device_id, "cancel", {"job": "away-1"})
    publish_command(publisher, device_id, "update", {"job": "away-2"})
    old = sockets(live_server.url, secret)
    kept = [json.loads(old.recv()) for _ in range(2)]
    assert [(f["topic"], f["payload"]["job"]) for f in kept] == [
        ("firmware/cancel", "away-1"),
        ("firmware/update", "away-2"),
    ]
    old.send(json.dumps({"ack": kept[0]["id"]}))  # the second is never acked on this socket
    old.send(message(0))
    assert json.loads(old.recv()) == {"ack": "m0"}  # frames are handled in order: the ack is in

    new = sockets(live_server.url, secret)
    _, code, reason = frames_until_closed(old)
    assert (code, reason) == (4001, "replaced by a newer connection of this device")
    again = json.loads(new.recv())
    assert again["payload"] == {"job": "away-2"}  # unacked: delivered again
    new.send(json.dumps({"ack": again["id"]}))
    new.send(message(1))
    assert json.loads(new.recv()) == {"ack": "m1"}
    new.send(message(0))  # sent again on another socket: stored once, acked as stored
    assert json.loads(new.recv()) == {"ack": "m0"}
    new.close()
    outbound = live_server.db().messages.count_documents({"device_id": device_id, "direction": "out"})
    assert outbound == 3  # stored as carweb's messages, as for any device
    statuses = live_server.db().messages.find({"topic": f"{device_id}/status"}, {"text": 1})
    wait_until(lambda: live_server.db().devices.find_one({"device_id": device_id, "online": False}))
    assert {doc["text"] for doc in statuses} == {"online", "offline"}


@pytest.fixture
def strict_server(web_server):
    """A carweb of its own with small socket limits: 20 messages a second, 64 KiB frames, pings every second."""
    url, _, env = web_server(
        f"ws_{uuid.uuid4().hex[:8]}",
        CARWEB_WS_RATE="20",
        CARWEB_WS_BURST="20",
        CARWEB_WS_MAX_FRAME="65536",
        CARWEB_WS_PING="1",
        CARWEB_LOG_LEVEL="INFO",
    )
    with pymongo.MongoClient(env["MONGODB_URI"]) as mongo:
        yield url, mongo.get_default_database()


def steady_device(url, secret, results):
    """Send 60 messages at 15 a second, each after the last one's ack; the answers into `results`."""
    ws = connect(url, secret)
    try:
        for n in range(60):
            ws.send(message(n))
            opcode, data = ws.recv_data()
            results.append(json.loads(data) if opcode == websocket.ABNF.OPCODE_TEXT else {"closed": data})
            time.sleep(1 / 15)
    finally:
        ws.close()


def test_bad_frames_floods_and_oversized_frames_are_refused_without_touching_another_device(
    strict_server, sockets
):
    """Error frames for bad frames, a close for floods, huge frames and silent devices; a neighbour goes on."""
    url, db = strict_server
    neighbour, results = "steady-car", []
    steady = threading.Thread(target=steady_device, args=(url, device_token(db, neighbour), results))
    steady.start()

    ws = sockets(url, device_token(db, "bad-car"))
    for frame in ("{not json", "[1, 2]", json.dumps({"topic": "t"}), json.dumps({"topic": "a/#", "id": 1})):
        ws.send(frame)
    ws.send(json.dumps({"topic": "firmware/update", "payload": {}, "id": "spoof"}))
    ws.send_binary(b"\x00\x01")
    errors = [json.loads(ws.recv()) for _ in range(6)]
    assert [e["id"] for e in errors] == [None, None, None, 1, "spoof", None]
    assert all(e["error"] for e in errors)
    try:
        for n in range(300):  # 20 pass, then 100 refused in a row close it
            ws.send(message(n))
    except (ConnectionResetError, BrokenPipeError):
        pass  # carweb stopped listening before the flood did
    answers, code, reason = frames_until_closed(ws)
    assert (code, reason) == (1008, "too many refused frames")
    assert any("rate limit" in a.get("error", "") for a in answers)

    big = sockets(url, device_token(db, "big-car"))
    big.send(json.dumps({"topic": "t", "payload": "x" * 70_000, "id": 1}))
    assert frames_until_closed(big)[1:] == (1009, "Message is too big")

    silent = sockets(url, device_token(db, "silent-car"))
    time.sleep(3)  # it never reads, so it never answers the pings
    assert frames_until_closed(silent)[1:] == (1008, "Ping/Pong timeout")

    steady.join(30)
    assert [r.get("ack") for r in results] == [f"m{n}" for n in range(60)]
    assert db.messages.count_documents({"device_id": neighbour, "topic": f"{neighbour}/telemetry"}) == 60
    assert db.messages.count_documents({"device_id": "big-car", "topic": "big-car/t"}) == 0


def run_socket_fleet(server, count, running):
    """Simulated cars over the device WebSocket in a thread, as `simulate --transport ws` runs them."""
    prefix = uuid.uuid4().hex
    ids = [simulated_device_id(prefix, n) for n in range(count)]
    cars = Fleet(
        server.url, count, 0.2, prefix=prefix, sockets={i: device_token(server.db(), i) for i in ids}
    )
    thread = threading.Thread(target=cars.run, daemon=True)
    thread.start()
    running.append((cars, thread))
    return ids


@pytest.fixture
def socket_fleet(live_server):
    """Start socket cars against the live server: `socket_fleet(count)` returns their ids; all stop after."""
    running = []
    yield lambda count: run_socket_fleet(live_server, count, running)
    for cars, thread in running:
        cars.stop()
        thread.join(15)


def test_a_rollout_over_mqtt_and_socket_cars_completes_and_a_car_away_gets_its_command_on_return(
    live_server, fleet, socket_fleet, tmp_path
):
    """Two MQTT cars, two socket cars, and a socket car that is away when its command is sent."""
    title, version, _, _, _ = upload_image(live_server, tmp_path)
    cars = fleet(2) + socket_fleet(2)
    prefix = uuid.uuid4().hex
    away = simulated_device_id(prefix, 0)
    token = device_token(live_server.db(), away)
    connect(live_server.url, token).close()  # it has been here: its session exists
    wait_for_devices(live_server, [*cars, away])

    rollout_id = start_rollout(live_server, title, version, [*cars, away], "--waves", "100")
    wait_until(lambda: (job_of(live_server, away) or {}).get("state") == "SENT")
    returning = Fleet(live_server.url, 1, 0.2, prefix=prefix, sockets={away: token})
    thread = threading.Thread(target=returning.run, daemon=True)
    thread.start()
    try:
        wait_for_rollout(live_server, rollout_id, "COMPLETED", timeout=60)
    finally:
        returning.stop()
        thread.join(15)
    jobs = jobs_of(live_server, rollout_id)
    assert {j["device_id"]: j["state"] for j in jobs} == dict.fromkeys([*cars, away], "UPDATED")
    assert all(j["attempts"] == 1 for j in jobs)
    assert len(outbound(live_server, away, "firmware/update")) == 1  # sent once, while it was away
