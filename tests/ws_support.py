"""Helpers of the device WebSocket tests: tokens in a server's database, and a plain client (websocket-client)."""

import json
import struct
from datetime import UTC, datetime

import websocket

from carweb.models.token import DeviceToken
from carweb.simulator_ws import socket_url


def device_token(db, device_id, name="test"):
    """A device token stored in the server's database as `flask device token` stores one; the secret."""
    secret, stored = DeviceToken.mint(name)
    db.device_tokens.insert_one({**stored, "device_id": device_id, "created_at": datetime.now(UTC)})
    return secret


def connect(base_url, secret, timeout=10, **options):
    """A connected device socket, past its `ready` frame (returned as `ws.ready`)."""
    ws = websocket.create_connection(
        socket_url(base_url), header=[f"Authorization: Bearer {secret}"], timeout=timeout, **options
    )
    ws.ready = json.loads(ws.recv())["ready"]
    return ws


def handshake_status(base_url, secret):
    """The HTTP status a handshake with this token gets (101 when accepted)."""
    try:
        ws = websocket.create_connection(
            socket_url(base_url), header=[f"Authorization: Bearer {secret}"], timeout=10
        )
    except websocket.WebSocketBadStatusException as exc:
        return exc.status_code
    ws.close()
    return 101


def message(n, topic="telemetry", msg_id=None, **payload):
    """A message frame with id `msg_id` (default m<n>)."""
    return json.dumps({"topic": topic, "payload": {"n": n, **payload}, "id": msg_id or f"m{n}"})


def frames_until_closed(ws):
    """Every text frame until the server closes; (frames, close code, close reason).

    Pings are not answered: a device that answers after carweb closed would get a reset
    instead of the close frame.
    """
    frames = []
    try:
        while True:
            try:
                frame = ws.recv_frame()
            except (websocket.WebSocketConnectionClosedException, ConnectionError):
                return frames, None, ""
            opcode, data = frame.opcode, frame.data
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                return frames, code, data[2:].decode()
            if opcode == websocket.ABNF.OPCODE_TEXT:
                frames.append(json.loads(data))
    finally:
        ws.shutdown()
