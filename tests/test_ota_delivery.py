"""Image delivery to devices: signed HTTP downloads with ranges, and the MQTT chunk transfer."""

import hashlib
import json
import queue
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
import requests
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.publish import single

from carweb.ota.delivery import ChunkLimiter, download_token
from tests.conftest import wait_until
from tests.ota_support import (
    job_of,
    outbound,
    start_rollout,
    upload_image,
    wait_for_devices,
    wait_for_rollout,
)

GRIDFS_CHUNK = 255 * 1024


@pytest.fixture(scope="module")
def command(live_server, services, tmp_path_factory):
    """An image of 600 kB (three GridFS chunks) and the update command one device got for it."""
    title, version, data, _, sha256 = upload_image(
        live_server, tmp_path_factory.mktemp("image"), size=600_000
    )
    device_id = str(uuid.uuid4())
    single(f"{device_id}/status", "online", qos=1, hostname="127.0.0.1", port=services.mqtt_port)
    wait_for_devices(live_server, [device_id])
    start_rollout(live_server, title, version, [device_id])
    stored = wait_until(lambda: outbound(live_server, device_id, "firmware/update"))
    payload = json.loads(stored[0]["payload"])
    return {"data": data, "sha256": sha256, "device_id": device_id, "payload": payload}


def test_update_command_carries_what_the_contract_names(command, live_server):
    """job, title, version, size, sha256, a signed url on this server, expires and chunk_size."""
    payload = command["payload"]
    assert set(payload) == {"job", "title", "version", "size", "sha256", "url", "expires", "chunk_size"}
    assert payload["size"] == len(command["data"]) and payload["sha256"] == command["sha256"]
    assert payload["url"].startswith(f"{live_server.url}/firmware/download/")
    assert 3500 < payload["expires"] - time.time() <= 3600
    assert payload["job"] == str(job_of(live_server, command["device_id"])["_id"])


def test_whole_download_matches_the_stored_bytes_without_a_login(command):
    """GET with the token alone: the exact bytes, with Content-Length, ETag and Accept-Ranges."""
    response = requests.get(command["payload"]["url"], timeout=30)
    assert response.status_code == 200
    assert response.content == command["data"]
    assert hashlib.sha256(response.content).hexdigest() == command["sha256"]
    assert response.headers["Content-Length"] == str(len(command["data"]))
    assert response.headers["ETag"] == f'"{command["sha256"]}"'
    assert response.headers["Accept-Ranges"] == "bytes"


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-99", 0, 100),
        (f"bytes={GRIDFS_CHUNK - 10}-{GRIDFS_CHUNK + 9}", GRIDFS_CHUNK - 10, GRIDFS_CHUNK + 10),
        ("bytes=599000-", 599_000, 600_000),
        ("bytes=-1000", 599_000, 600_000),
        (f"bytes={2 * GRIDFS_CHUNK + 1}-{2 * GRIDFS_CHUNK + 1}", 2 * GRIDFS_CHUNK + 1, 2 * GRIDFS_CHUNK + 2),
    ],
)
def test_ranged_download_returns_exactly_the_asked_bytes(command, header, start, end):
    """Range requests get 206 with the stored bytes of that range, across GridFS chunk borders too."""
    response = requests.get(command["payload"]["url"], headers={"Range": header}, timeout=30)
    assert response.status_code == 206
    assert response.content == command["data"][start:end]
    assert response.headers["Content-Range"] == f"bytes {start}-{end - 1}/{len(command['data'])}"
    assert response.headers["Content-Length"] == str(end - start)


def test_unsatisfiable_range_and_matching_etag(command):
    """A range past the end is 416; If-None-Match with the SHA-256 is 304."""
    url = command["payload"]["url"]
    assert requests.get(url, headers={"Range": "bytes=700000-"}, timeout=10).status_code == 416
    cached = requests.get(url, headers={"If-None-Match": f'"{command["sha256"]}"'}, timeout=10)
    assert cached.status_code == 304 and cached.content == b""


def altered(token):
    """The token with one character of its signed data changed."""
    position = 3
    return token[:position] + ("A" if token[position] != "A" else "B") + token[position + 1 :]


def test_forged_altered_foreign_and_expired_tokens_get_403(command, live_server, monkeypatch):
    """Only a token this server signed, for this job and device, within its lifetime, downloads."""
    url = command["payload"]["url"]
    base, token = url.rsplit("/", 1)
    job_id = command["payload"]["job"]
    secret = {"SECRET_KEY": live_server.env["SECRET_KEY"]}
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: 1_000_000_000.0)  # signed long ago
        expired = download_token(secret, job_id, command["device_id"])
    tokens = {
        "forged": "forged-token",
        "altered": altered(token),
        "other secret": download_token({"SECRET_KEY": "not-the-secret"}, job_id, command["device_id"]),
        "other device": download_token(secret, job_id, str(uuid.uuid4())),
        "expired": expired,
    }
    for name, bad in tokens.items():
        response = requests.get(f"{base}/{bad}", timeout=10)
        assert response.status_code == 403, name
    assert requests.get(url, timeout=30).status_code == 200


class ChunkDevice:
    """A device without HTTP: takes the update command over MQTT and fetches chunks one by one."""

    def __init__(self, port, device_id):
        self.device_id = device_id
        self.inbox = queue.Queue()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"chunk-{uuid.uuid4().hex[:8]}")
        self.client.on_message = lambda _c, _u, msg: self.inbox.put((msg.topic, bytes(msg.payload)))
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(f"{device_id}/firmware/#", qos=1)
        assert subscribed.wait(5), "the broker did not confirm the subscription"

    def take(self, topic, timeout=10):
        """The payload of the next message on `topic`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got, payload = self.inbox.get(timeout=deadline - time.monotonic())
            if got == topic:
                return payload
        raise AssertionError(f"nothing on {topic}")

    def chunk(self, job, index):
        """Request chunk `index` and return its bytes."""
        request = json.dumps({"job": job, "index": index})
        self.client.publish(f"{self.device_id}/firmware/chunk/request", request, qos=1).wait_for_publish(5)
        return self.take(f"{self.device_id}/firmware/chunk/{job}/{index}")

    def close(self):
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def chunk_update(live_server, services, publisher, tmp_path):
    """A device without HTTP sent the update command of a 150 kB image: (device, command, image bytes, sha256)."""
    title, version, data, _, sha256 = upload_image(live_server, tmp_path, size=150_000)
    device_id = str(uuid.uuid4())
    publisher.publish(f"{device_id}/status", "online", qos=1).wait_for_publish(5)
    wait_for_devices(live_server, [device_id])
    device = ChunkDevice(services.mqtt_port, device_id)
    try:
        start_rollout(live_server, title, version, [device_id])
        command = json.loads(device.take(f"{device_id}/firmware/update"))
        yield device, command, data, sha256
    finally:
        device.close()


def test_mqtt_chunks_reassemble_to_the_same_sha256(live_server, chunk_update):
    """Chunk 0..N-1 rebuild the image, chunk N is empty; the SHA-256 is the command's."""
    device, command, data, sha256 = chunk_update
    count = -(-command["size"] // command["chunk_size"])
    image = b"".join(device.chunk(command["job"], index) for index in range(count))
    assert device.chunk(command["job"], count) == b""
    assert hashlib.sha256(image).hexdigest() == command["sha256"] == sha256
    assert image == data
    query = {"device_id": device.device_id, "topic": {"$regex": "/chunk/.*/0$"}}
    history = live_server.db().messages.find(query)
    assert [(len(m["payload"]), m["size"]) for m in history] == [(0, command["chunk_size"])]


def test_repeated_and_impossible_chunk_requests_are_not_answered(live_server, chunk_update):
    """A chunk asked again within seconds, or far past the end, costs no read and no 64 KiB publish."""
    device, command, _, _ = chunk_update
    job, topic = command["job"], f"{device.device_id}/firmware/chunk/request"
    for index in (0, 0, 0, 10_000, 1):
        device.client.publish(topic, json.dumps({"job": job, "index": index}), qos=1).wait_for_publish(5)
    device.take(f"{device.device_id}/firmware/chunk/{job}/1")  # answered in order: the 0s came first
    time.sleep(1)
    assert [topic for topic, _ in list(device.inbox.queue) if "/chunk/" in topic] == []
    query = {"device_id": device.device_id, "topic": {"$regex": "/chunk/[^/]+/"}}
    assert live_server.db().messages.count_documents(query) == 2  # chunk 0 once, chunk 1


def test_simulated_cars_update_over_mqtt_chunks(live_server, fleet, tmp_path):
    """`simulate --chunks` devices fetch, verify and report UPDATED without HTTP."""
    title, version, _, _, _ = upload_image(live_server, tmp_path, size=100_000)
    devices = fleet(2, chunks=True)
    wait_for_devices(live_server, devices)
    rollout_id = start_rollout(live_server, title, version, devices)
    wait_for_rollout(live_server, rollout_id, "COMPLETED", timeout=60)
    for device_id in devices:
        assert (
            len(
                outbound(
                    live_server,
                    device_id,
                    "firmware/chunk/" + str(job_of(live_server, device_id)["_id"]) + "/0",
                )
            )
            >= 1
        )


def test_chunk_limiter_answers_a_chunk_again_once_the_window_passed():
    """Per device, job and index: once per window; job lookups are remembered for a moment."""
    now = [0.0]
    limiter = ChunkLimiter(window=5, clock=lambda: now[0])
    assert limiter.first_time("d", "j", 0) and not limiter.first_time("d", "j", 0)
    assert limiter.first_time("d", "j", 1) and limiter.first_time("e", "j", 0)
    lookups = []
    assert limiter.job("j", lambda job_id: lookups.append(job_id) or "job") == "job"
    assert limiter.job("j", lambda job_id: lookups.append(job_id) or "other") == "job"
    now[0] = 5.5
    assert limiter.first_time("d", "j", 0)
    assert limiter.job("j", lambda job_id: lookups.append(job_id) or "fresh") == "fresh"
    assert lookups == ["j", "j"]
