"""The device side of firmware updates for simulated cars: take the command, download, verify, report.

Each update runs in its own thread (paho's callbacks must not block); `--fail-rate` makes a
device corrupt what it received so the checksum check fails, `--step-delay` slows each step.
"""

import base64
import binascii
import hashlib
import json
import logging
import queue
import random
import threading
import time
import urllib.request
from dataclasses import dataclass

from carweb.ota.signing import SignatureError, verify

log = logging.getLogger(__name__)
READ_SIZE = 64 * 1024
CHUNK_WAIT = 10.0
CHUNK_TRIES = 3


@dataclass(frozen=True)
class UpdateBehaviour:
    """How simulated devices behave during updates."""

    fail_rate: float = 0.0
    step_delay: float = 0.0
    chunks: bool = False
    # Trusted public keys ({key id: key}, carweb.ota.signing): with them, a device takes
    # only images whose signature verifies, and REJECTS the others.
    keys: dict | None = None


class UpdateCanceled(Exception):
    """The server canceled the job this device was working on."""


class FirmwareAgent:
    """One simulated device's updater, fed by its MQTT client's messages under `<id>/firmware/`."""

    def __init__(self, device_id, client, behaviour):
        self.device_id = device_id
        self.client = client
        self.behaviour = behaviour
        self.version = None
        self.subscribed = threading.Event()
        self.canceled = set()
        self.chunks = queue.Queue()
        self.prefix = f"{device_id}/firmware/"

    def subscribe(self):
        """Subscribe to the device's firmware topics (call on every connect: sessions are clean)."""
        self.client.subscribe(f"{self.prefix}#", qos=1)

    def on_message(self, msg):
        """Route one message: an update starts a thread, a cancel stops it, a chunk goes to the download."""
        if not msg.topic.startswith(self.prefix):
            return
        rest = msg.topic[len(self.prefix) :]
        if rest in ("update", "cancel"):
            try:
                command = json.loads(msg.payload)
            except ValueError:
                log.warning("%s: %s is not JSON", self.device_id, msg.topic)
                return
            if rest == "cancel":
                self.canceled.add(command.get("job"))
            else:
                threading.Thread(target=self.run_update, args=(command,), daemon=True).start()
        elif rest.startswith("chunk/") and rest != "chunk/request":
            _, job, index = rest.split("/")
            self.chunks.put((job, int(index), bytes(msg.payload)))

    def report(self, job, state, **fields):
        """Publish a status report with QoS 1 and wait until the broker has it."""
        payload = json.dumps({"job": job, "state": state, **fields})
        self.client.publish(f"{self.prefix}status", payload, qos=1).wait_for_publish(10)

    def step(self, job):
        """Pause between steps, and stop when the job was canceled."""
        if self.behaviour.step_delay:
            time.sleep(self.behaviour.step_delay)
        if job in self.canceled:
            raise UpdateCanceled(job)

    def run_update(self, command):
        """Download, verify, install and report each state; FAILED with the reason on any error."""
        job = command["job"]
        self.canceled.discard(job)
        try:
            self.report(job, "DOWNLOADING", progress=0)
            download = self.download_chunks if self.behaviour.chunks else self.download_http
            digest = download(command)
            self.step(job)
            self.report(job, "DOWNLOADED", progress=100)
            if digest != command["sha256"]:
                self.report(
                    job, "FAILED", error=f"sha256 mismatch: expected {command['sha256']}, got {digest}"
                )
                return
            refusal = self.signature_refusal(command, digest)
            if refusal:
                self.report(job, "REJECTED", error=refusal)
                return
            for state in ("VERIFIED", "UPDATING"):
                self.step(job)
                self.report(job, state)
            self.step(job)
            self.version = command["version"]
            self.report(job, "UPDATED", version=command["version"])
        except UpdateCanceled:
            log.info("%s: job %s canceled", self.device_id, job)
        except Exception as exc:  # noqa: BLE001 - a device reports any failure instead of dying
            self.report(job, "FAILED", error=f"{exc.__class__.__name__}: {exc}"[:300])

    def signature_refusal(self, command, digest):
        """Why a device that carries keys will not install this image (None: it will, or it carries none).

        The signature must cover what was downloaded: its SHA-256 with the command's title and version.
        """
        if self.behaviour.keys is None:
            return None
        if not command.get("signature") or not command.get("key_id"):
            return "unsigned image"
        try:
            signature = base64.b64decode(command["signature"], validate=True)
            verify(
                self.behaviour.keys,
                command["title"],
                command["version"],
                digest,
                command["key_id"],
                signature,
            )
        except (SignatureError, ValueError, binascii.Error) as exc:
            return f"signature check failed: {exc}"[:300]
        return None

    def _hasher(self):
        """SHA-256 of what arrives; with probability fail_rate the device "corrupts" its copy."""
        digest = hashlib.sha256()
        if random.random() < self.behaviour.fail_rate:
            digest.update(b"\x00corrupted in flash\x00")
        return digest

    def download_http(self, command):
        """GET the signed URL in blocks; return the SHA-256 of what was received."""
        digest = self._hasher()
        with urllib.request.urlopen(command["url"], timeout=30) as response:
            while block := response.read(READ_SIZE):
                digest.update(block)
        return digest.hexdigest()

    def download_chunks(self, command):
        """Request chunk after chunk over MQTT until the image is complete; return its SHA-256."""
        job, size, chunk_size = command["job"], command["size"], command["chunk_size"]
        digest = self._hasher()
        for index in range(-(-size // chunk_size)):
            digest.update(self._fetch_chunk(job, index))
            if job in self.canceled:
                raise UpdateCanceled(job)
        return digest.hexdigest()

    def _fetch_chunk(self, job, index):
        """Ask for one chunk, asking again when it does not come."""
        for _ in range(CHUNK_TRIES):
            request = json.dumps({"job": job, "index": index})
            self.client.publish(f"{self.prefix}chunk/request", request, qos=1).wait_for_publish(10)
            deadline = time.monotonic() + CHUNK_WAIT
            while (left := deadline - time.monotonic()) > 0:
                try:
                    got_job, got_index, data = self.chunks.get(timeout=left)
                except queue.Empty:
                    break
                if (got_job, got_index) == (job, index):
                    return data
        raise TimeoutError(f"chunk {index} did not arrive")
