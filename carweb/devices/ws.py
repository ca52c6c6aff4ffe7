"""The device WebSocket `/devices/ws`: a device token at the handshake, then the gateway (`gateway.py`)."""

import contextlib
import socket
import time

import gevent
import gevent.event
import gevent.lock
import simple_websocket
from flask import Response, current_app, jsonify, request

from carweb.devices import bp
from carweb.devices.gateway import DeviceConnection
from carweb.models import DeviceToken

LINGER_SECONDS = 2.0
QUERY_TOKEN = "token"  # only for clients that cannot set headers (browsers): it lands in access logs


class WholeWrites:
    """A socket whose `send` writes the whole buffer, one writer at a time.

    simple-websocket writes with send(), which may write part of a large frame, and here
    two greenlets write to one socket: the reader answering pings, the device's acks and
    its commands.
    """

    def __init__(self, sock, lock):
        self._sock = sock
        self._lock = lock

    def send(self, data):
        """Write all of `data`."""
        with self._lock:
            self._sock.sendall(data)
        return len(data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


class DeviceSocket(simple_websocket.Server):
    """simple-websocket's server, fit for many devices in one gevent worker.

    - After each read it yields, so a device that floods cannot keep the worker to itself
      (gevent's recv returns at once while data waits, without switching).
    - It stops reading while QUEUE_MAX frames wait to be handled, so a flood piles up in
      the device's TCP window, not in carweb's memory.
    - Frames go out whole and in the order they were encoded (`WholeWrites`, and `send`
      encodes under the same lock: compressed frames must arrive in order).
    """

    QUEUE_MAX = 64

    def __init__(self, environ, **options):
        self._send_lock = gevent.lock.RLock()
        self._taken = gevent.event.Event()
        self._open = False
        super().__init__(environ, **options)

    def handshake(self):
        """simple-websocket's handshake; frames are read after it."""
        super().handshake()
        self._open = self.connected

    @property
    def sock(self):
        """The connection's socket, writing whole buffers."""
        return self._sock

    @sock.setter
    def sock(self, value):
        self._sock = WholeWrites(value, self._send_lock) if value is not None else None

    def _handle_events(self):
        """simple-websocket's frame handling, then back-pressure and a turn for other greenlets."""
        keep_going = super()._handle_events()
        if not self._open:  # the handshake
            return keep_going
        while keep_going and self.connected and len(self.input_buffer) >= self.QUEUE_MAX:
            self._taken.clear()
            self._taken.wait(1.0)
            # Held back by carweb, the device's pong waits unread behind its frames: what
            # it sends shows it is alive, so it is not closed for a missing pong.
            self.pong_received = True
        gevent.sleep(0)
        if keep_going and self.connected:
            return True
        # Closed by either side, carweb's close perhaps meanwhile (simple-websocket would
        # mark the socket open again with a True here).
        self._linger()
        self.connected = False
        self.event.set()  # wake the greenlet waiting in `receive`
        return False

    def _linger(self):
        """After carweb's close, read and drop what the device still sends, for a moment.

        Closing a socket with unread data sends a reset, and the device would lose the
        close frame that says why (a device still sending a too large frame, a flood).
        """
        deadline = time.monotonic() + LINGER_SECONDS
        with contextlib.suppress(OSError):
            while (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                if not self.sock.recv(64 * 1024):
                    return

    def receive(self, timeout=None):
        """The next frame (None after `timeout`); the reader may go on once there is room."""
        data = super().receive(timeout)
        self._taken.set()
        return data

    def send(self, data):
        """Encode and write one text frame, in order with every other."""
        with self._send_lock:
            super().send(data)

    def abort(self):
        """Cut the connection without a close frame (a device that reads nothing gets no other)."""
        if self.connected:
            self.connected = False
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self.event.set()

    def close(self, reason=None, message=None):
        """Close with a code and reason, and wake the greenlet waiting in `receive` (closed already: nothing)."""
        if not self.connected:
            return  # simple-websocket's own ping timeout may call this after carweb's close
        with self._send_lock:
            super().close(reason, message)
        self.event.set()

    def wait_closed(self):
        """Wait while the reader still reads what the device sends after a close (at most LINGER_SECONDS)."""
        self.thread.join(LINGER_SECONDS + 1)


class SocketEnded(Response):
    """What the view returns once its socket has closed: the server must not write a response."""

    def __init__(self, mode):
        super().__init__()
        self.mode = mode

    def __call__(self, environ, start_response):
        """Tell the server the connection is done (its way); nothing is written."""
        if self.mode == "gunicorn":
            raise StopIteration()
        if self.mode == "werkzeug":
            raise ConnectionError()
        return []


def presented_secret():
    """The device token of the handshake: `Authorization: Bearer ...`, else the `token` query parameter."""
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and secret.strip():
        return secret.strip()
    return request.args.get(QUERY_TOKEN)


def refusal(status, reason):
    """A refused handshake, as JSON a device can log."""
    response = jsonify(error=reason)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="carweb devices"'
    return response


@bp.route("/ws", websocket=True)
@bp.route("/ws")  # a plain request gets told what the endpoint wants
def device_socket():
    """A device's WebSocket (docs/device-websocket.md): messages up, acks and commands down."""
    config = current_app.config
    token = DeviceToken.find(presented_secret())
    if token is None:
        return refusal(401, "send a device token: Authorization: Bearer cwd_... (made on the device's page)")
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return refusal(400, "this is a WebSocket endpoint; connect with a WebSocket client")
    if str(config["MQTT_PROTOCOL"]) != "5":
        return refusal(503, "device sockets need MQTT 5 between carweb and its broker (MQTT_PROTOCOL=5)")
    token.touch()
    ws = DeviceSocket(
        request.environ,
        ping_interval=config["CARWEB_WS_PING"],
        max_message_size=config["CARWEB_WS_MAX_FRAME"],
    )
    DeviceConnection(current_app._get_current_object(), token, ws).serve()
    ws.wait_closed()  # the server would otherwise close the socket under the reader's linger
    return SocketEnded(ws.mode)
