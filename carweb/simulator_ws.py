"""A simulated car's side of the device WebSocket (/devices/ws), shaped like the paho client the cars use.

`publish` returns something to `wait_for_publish` on, which waits for carweb's ack (the
message is stored); unacknowledged messages are sent again, with the same id, after an
error frame or a reconnect. Commands are handed to `on_message` like MQTT messages and
acked once handled. docs/device-websocket.md is the contract this follows.
"""

import base64
import json
import logging
import threading
import uuid
from types import SimpleNamespace

import simple_websocket

from carweb.devices.ws_frames import CLOSE_REPLACED

log = logging.getLogger(__name__)
RESEND_AFTER = 1.0  # seconds after an error frame before a message is sent again
MAX_BACKOFF = 30


def socket_url(base_url):
    """The device WebSocket's URL under carweb's base URL (http -> ws, https -> wss)."""
    base = base_url.rstrip("/")
    if base.startswith("http"):
        base = "ws" + base[len("http") :]
    return f"{base}/devices/ws"


class Delivery:
    """One message until carweb has stored it."""

    def __init__(self, frame):
        self.frame = frame
        self.stored = threading.Event()

    def wait_for_publish(self, timeout=None):
        """Wait until carweb acknowledged the message (stored)."""
        self.stored.wait(timeout)

    def is_published(self):
        """Whether carweb acknowledged the message."""
        return self.stored.is_set()


class DeviceSocketClient:
    """A device on carweb's WebSocket: publish messages, take commands, reconnect with back-off."""

    def __init__(self, url, device_id, token):
        self.url = url
        self.device_id = device_id
        self.token = token
        self.on_message = None
        self.connected = threading.Event()
        self._unacked = {}  # frame id -> Delivery, in sending order
        self._lock = threading.Lock()
        self._ws = None
        self._stop = threading.Event()
        self._thread = None

    def connect(self, timeout=10):
        """Connect and keep connected in a thread until `disconnect`; wait for the first connection."""
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"ws-{self.device_id[:8]}")
        self._thread.start()
        return self.connected.wait(timeout)

    def publish(self, topic, payload, qos=1, retain=False):
        """Send a message (topic with or without the device id first); a Delivery to wait on."""
        topic = topic.removeprefix(f"{self.device_id}/")
        frame = {"topic": topic, "id": uuid.uuid4().hex[:16]}
        try:
            frame["payload"] = json.loads(payload)
        except (ValueError, TypeError):
            raw = payload.encode() if isinstance(payload, str) else bytes(payload)
            frame["payload_base64"] = base64.b64encode(raw).decode("ascii")
        if retain:
            frame["retain"] = True
        delivery = Delivery(frame)
        with self._lock:
            self._unacked[frame["id"]] = delivery
        self._send(frame)
        return delivery

    def subscribe(self, *args, **kwargs):
        """Nothing to do: carweb sends a socket its device's commands."""

    def disconnect(self):
        """Close the socket and stop reconnecting."""
        self._stop.set()
        ws = self._ws
        if ws is not None and ws.connected:
            ws.close()
        if self._thread is not None:
            self._thread.join(5)

    def _send(self, frame):
        """Send a frame if connected; what is not acked is sent again after the next connect."""
        ws = self._ws
        if ws is None or not self.connected.is_set():
            return
        try:
            with self._lock:
                ws.send(json.dumps(frame))
        except (simple_websocket.ConnectionClosed, OSError):
            pass

    def _run(self):
        """Connect, read until the socket closes, and again with back-off (not when replaced)."""
        delay = 1
        while not self._stop.is_set():
            try:
                self._ws = simple_websocket.Client.connect(
                    self.url, headers={"Authorization": f"Bearer {self.token}"}
                )
                delay = 1
                code = self._read()
            except (simple_websocket.ConnectionError, OSError) as exc:
                log.warning("%s: cannot connect: %s", self.device_id, exc)
                code = None
            self.connected.clear()
            if code == CLOSE_REPLACED:
                log.warning("%s: replaced by another connection of the device", self.device_id)
                return
            self._stop.wait(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    def _read(self):
        """Handle frames until the socket closes; the close code."""
        ws = self._ws
        try:
            while True:
                self._handle(json.loads(ws.receive()))
        except simple_websocket.ConnectionClosed as closed:
            return closed.reason

    def _handle(self, frame):
        """One frame from carweb: ready, an ack, an error, or a command."""
        if "ready" in frame:
            self.connected.set()
            with self._lock:
                frames = [delivery.frame for delivery in self._unacked.values()]
            for unacked in frames:  # sent again under the same ids: stored once
                self._send(unacked)
        elif "ack" in frame:
            with self._lock:
                delivery = self._unacked.pop(frame["ack"], None)
            if delivery is not None:
                delivery.stored.set()
        elif "error" in frame:
            self._resend_later(frame)
        elif "topic" in frame:
            self._command(frame)

    def _resend_later(self, frame):
        """A refused message is sent again after a pause (a rate limit passes; a bad one is logged)."""
        with self._lock:
            delivery = self._unacked.get(frame.get("id"))
        log.info("%s: carweb refused %s: %s", self.device_id, frame.get("id"), frame["error"])
        if delivery is not None and "send it again" in frame["error"]:
            timer = threading.Timer(RESEND_AFTER, self._send, args=(delivery.frame,))
            timer.daemon = True
            timer.start()

    def _command(self, frame):
        """Hand a command to `on_message` as an MQTT message would be, then ack it."""
        if "payload_base64" in frame:
            payload = base64.b64decode(frame["payload_base64"])
        else:
            payload = json.dumps(frame.get("payload")).encode()
        if self.on_message is not None:
            self.on_message(SimpleNamespace(topic=f"{self.device_id}/{frame['topic']}", payload=payload))
        if frame.get("id") is not None:
            self._send({"ack": frame["id"]})
