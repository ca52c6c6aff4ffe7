"""A device WebSocket's gateway into the broker: the device's own persistent MQTT session.

While a device is connected, its socket holds an MQTT connection under the client id
`carweb-ws-<device id>` with a persistent session: its messages are published under its
id (with its message id as the MQTT 5 user property `msg-id`), so the bridges store,
number, count, show and dispatch them exactly as an MQTT device's; its commands
(`firmware/update`, `firmware/cancel`, chunks) reach it from that session, which keeps
them at the broker while it is away. A new socket of the same device takes the session
over wherever it connects, and the broker closes the old one. The device gets
`{"ack": id}` once its message is stored (`stored.py`).
"""

import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

import gevent
import gevent.event
import gevent.queue
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from pymongo.errors import PyMongoError
from simple_websocket import ConnectionClosed
from wsproto.utilities import LocalProtocolError

from carweb.bridge.mqtt import build_client, connect_async
from carweb.devices.stored import stored_watch
from carweb.devices.ws_frames import (
    CLOSE_POLICY,
    CLOSE_REPLACED,
    CLOSE_RESTART,
    CLOSE_SERVER_ERROR,
    CommandAck,
    FrameError,
    TokenBucket,
    ack_frame,
    command_frame,
    error_frame,
    parse_frame,
    ready_frame,
)
from carweb.models import DeviceToken

log = logging.getLogger(__name__)
CLIENT_PREFIX = "carweb-ws-"
COMMAND_TOPICS = ("firmware/update", "firmware/cancel", "firmware/chunk/+/+")
CONNECT_TIMEOUT = 10
# A new connection within this many seconds (a replacement, a quick reconnect) keeps the
# broker from publishing the lost connection's `offline` will.
WILL_DELAY = 5
RECEIVE_MAXIMUM = 20  # commands sent to a device before it acks them
MAX_PENDING = 1000  # messages awaiting storage; beyond, the socket is read no further
MAX_PENDING_BYTES = 16 * 1024 * 1024
ACKED_REMEMBERED = 1000  # ids acked lately, so a repeat is answered without publishing again
ACK_TIMEOUT = 60.0
REVALIDATE_SECONDS = 60.0
TOPIC_HEADROOM = 1024  # the MQTT packet's header and properties around topic and payload
SESSION_TAKEN_OVER = 142
CONNECTIONS_KEY = "carweb.device_sockets"
FORCE_CLOSE_SECONDS = 5.0
REPLACED = "replaced by a newer connection of this device"


@dataclass
class Awaited:
    """A published message the socket waits to hear is stored."""

    frames: list  # (frame id, duplicate) of every frame that carried it
    at: float  # when it was published (monotonic)
    size: int  # payload bytes, counted against the socket's room


class DeviceConnection:
    """One device's socket and MQTT session, from the handshake to the close."""

    def __init__(self, app, token, ws):
        self.app = app
        self.config = app.config
        self.token = token
        self.device_id = token.device_id
        self.ws = ws
        self.prefix = f"{self.device_id}/"
        self.rate = TokenBucket(self.config["CARWEB_WS_RATE"], self.config["CARWEB_WS_BURST"])
        self.errors = TokenBucket(self.config["CARWEB_WS_RATE"] / 10, 100)
        self.pending = {}  # msg_id -> Awaited, in publishing order
        self.pending_bytes = 0
        self.acked = OrderedDict()
        self.commands = {}  # command frame id -> MQTT message id, until the device acks
        self.room = gevent.event.Event()
        self.outbox = gevent.queue.Queue()
        self.ready = gevent.event.Event()
        self.refused = False  # the broker refused the session
        self.held_commands = []  # until the device has its `ready` frame; then None
        self.client = None
        self.closing = None  # (code, reason) once the server decided to close
        self.checked_at = time.monotonic()

    # -- the connection's life -------------------------------------------------------

    def serve(self):
        """Connect the session, relay until either side ends, then close both."""
        connections = self.app.extensions.setdefault(CONNECTIONS_KEY, set())
        for older in [c for c in connections if c.device_id == self.device_id]:
            older.close(CLOSE_REPLACED, REPLACED)
        connections.add(self)
        watch = stored_watch(self.app)
        loop, sender = None, gevent.spawn(self._send_loop)
        try:
            loop = self._connect()
            if loop is None:
                return
            watch.add(self)
            self._read_frames()
        finally:
            watch.remove(self)
            connections.discard(self)
            self._end_session(loop)
            self.outbox.put(StopIteration)  # the sender ends once the queue before it is sent
            sender.join(FORCE_CLOSE_SECONDS)
            sender.kill()

    def close(self, code, reason):
        """Close the socket with a code and reason after the frames queued before it (from any greenlet).

        A device that reads nothing would keep the close in the queue: after
        FORCE_CLOSE_SECONDS its connection is cut.
        """
        if self.closing is not None:
            return
        self.closing = (code, reason)
        log.info("device socket %s closed by carweb: %s %s", self.device_id, code, reason)
        self.outbox.put((code, reason))
        self.room.set()  # a frame waiting for room is not published after all
        gevent.spawn_later(FORCE_CLOSE_SECONDS, self.ws.abort)

    def _connect(self):
        """Open the device's MQTT session and wait until it is subscribed; the loop greenlet, or None."""
        client, address = build_client(self._mqtt_config(), client_id=CLIENT_PREFIX + self.device_id)
        will = Properties(PacketTypes.WILLMESSAGE)
        will.WillDelayInterval = WILL_DELAY
        client.will_set(f"{self.prefix}status", "offline", qos=1, retain=True, properties=will)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_command
        client.on_disconnect = self._on_disconnect
        self.client = client
        connect_async(client, address, self._mqtt_config())
        try:
            client.reconnect()
        except OSError as exc:
            log.warning("device socket %s: cannot reach the broker: %s", self.device_id, exc)
            self.close(CLOSE_SERVER_ERROR, "carweb cannot reach its broker; reconnect later")
            return None
        loop = gevent.spawn(self._mqtt_loop)
        if not self.ready.wait(CONNECT_TIMEOUT) or self.refused:
            self.close(CLOSE_SERVER_ERROR, "carweb's broker did not accept the session; reconnect later")
            loop.kill()
            return None
        return loop

    def _mqtt_config(self):
        """carweb's MQTT settings for a device session: its own URL, expiry and command window."""
        config = dict(self.config)
        config.update(
            MQTT_URL=self.config["CARWEB_WS_MQTT_URL"],
            MQTT_SESSION_EXPIRY=self.config["CARWEB_WS_SESSION_EXPIRY"],
            MQTT_RECEIVE_MAXIMUM=RECEIVE_MAXIMUM,
        )
        return config

    def _ready_frame(self):
        """The first frame: the device's id and the limits it is held to."""
        limits = {
            "max_frame_bytes": self.config["CARWEB_WS_MAX_FRAME"],
            "messages_per_second": self.config["CARWEB_WS_RATE"],
            "burst": self.config["CARWEB_WS_BURST"],
            "max_unacked": MAX_PENDING,
            "ping_seconds": self.config["CARWEB_WS_PING"],
        }
        return ready_frame(self.device_id, limits)

    def _mqtt_loop(self):
        """Run the MQTT connection until it fails (then close the socket saying why) or is killed."""
        rc = None
        try:
            while (rc := self.client.loop(timeout=1.0)) == MQTTErrorCode.MQTT_ERR_SUCCESS:
                pass
        except Exception:  # noqa: BLE001 - whatever ends the session must close the socket too
            log.exception("device socket %s: its MQTT loop failed", self.device_id)
        if self.closing is None:
            log.warning("device socket %s: its broker connection ended: %s", self.device_id, rc)
            self.close(CLOSE_SERVER_ERROR, "carweb lost its broker connection; reconnect later")

    def _end_session(self, loop):
        """Say `offline` (unless replaced) and disconnect; the session keeps commands until the next connection."""
        client, code = self.client, (self.closing or (1000,))[0]
        if client is not None and client.is_connected() and code != CLOSE_REPLACED:
            _wait_published(client.publish(f"{self.prefix}status", "offline", qos=1, retain=True), 2.0)
        if client is not None:
            client.disconnect()  # a normal disconnect: the broker drops the will, keeps the session
        if loop is not None:
            loop.kill()
        if client is not None:
            # paho's loop() made a socket pair for waking itself that only its finaliser
            # closes; a reconnect storm would pile them up (pinned paho 2.2).
            client._reset_sockets()
        if self.ws.connected:
            self.close(1000, "")

    # -- MQTT callbacks (in the loop greenlet) ------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        """Subscribe to the device's commands (again: cheap, and needed for a new or lost session)."""
        if reason_code.is_failure:
            log.warning("device socket %s: the broker refused the session: %s", self.device_id, reason_code)
            self.refused = True
            self.ready.set()
            return
        # noLocal: what the device publishes under a command-like topic never comes back to it.
        options = SubscribeOptions(qos=1, noLocal=True, retainHandling=2)
        client.subscribe([(self.prefix + topic, options) for topic in COMMAND_TOPICS])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        """Subscribed: the device is told it is connected, then gets the commands its session kept."""
        if any(code.is_failure for code in reason_codes):
            log.warning(
                "device socket %s: the broker refused its command topics: %s", self.device_id, reason_codes
            )
            self.refused = True
            self.ready.set()
            return
        self._send(self._ready_frame())
        for frame in self.held_commands:
            self._send(frame)
        self.held_commands = None
        client.publish(f"{self.prefix}status", "online", qos=1, retain=True)
        self.ready.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        """The broker ended the session's connection: a newer socket of the device took it, or it failed.

        Brokers that say so send reason 142; Mosquitto 2.0 just closes the connection, so a
        socket replaced from another process is closed as if the broker were lost (a newer
        socket in this process closes it itself, in `serve`).
        """
        if getattr(reason_code, "value", None) == SESSION_TAKEN_OVER:
            self.close(CLOSE_REPLACED, REPLACED)

    def _on_command(self, client, userdata, msg):
        """Send a command down the socket; it is acked to the broker when the device acks it."""
        frame_id = None
        if msg.qos:
            frame_id = f"c{msg.mid}"
            self.commands[frame_id] = msg.mid
        frame = command_frame(msg.topic[len(self.prefix) :], bytes(msg.payload), frame_id)
        if self.held_commands is not None:  # the session's kept commands come before our SUBACK
            self.held_commands.append(frame)
        else:
            self._send(frame)

    # -- frames from the device -----------------------------------------------------------

    def _read_frames(self):
        """Handle frames until the socket closes."""
        while True:
            left = REVALIDATE_SECONDS - (time.monotonic() - self.checked_at)
            try:
                data = self.ws.receive(timeout=max(left, 0.1))
            except ConnectionClosed:
                return
            if time.monotonic() - self.checked_at >= REVALIDATE_SECONDS and not self._token_still_valid():
                self.close(CLOSE_POLICY, "the device's token was revoked")
                return
            if data is not None:
                self._handle(data)

    def _token_still_valid(self):
        """Whether the token the device connected with still exists (noted as used)."""
        self.checked_at = time.monotonic()
        try:
            token = DeviceToken.objects(pk=self.token.pk).first()
            if token is not None:
                token.touch()
        except PyMongoError as exc:  # the database is away: keep the device, check again later
            log.warning("device socket %s: cannot check its token (%s)", self.device_id, exc)
            return True
        return token is not None

    def _handle(self, data):
        """One frame: a message to publish, or a command's ack; anything else is refused."""
        try:
            frame = parse_frame(data)
        except FrameError as exc:
            if self.closing is None:
                self._refuse(str(exc), exc.id)
            return
        if isinstance(frame, CommandAck):  # even while closing: the command need not come again
            self._command_acked(frame.id)
        elif self.closing is not None:
            return  # carweb is closing the socket: messages that still come are not taken
        elif not self.rate.take():
            rate, burst = self.config["CARWEB_WS_RATE"], self.config["CARWEB_WS_BURST"]
            self._refuse(
                f"rate limit: at most {rate:g} messages a second (bursts of {burst}); send it again later",
                frame.id,
            )
        else:
            self._publish(frame)

    def _refuse(self, reason, frame_id):
        """Answer with an error; a device that keeps sending refused frames is disconnected."""
        self._send(error_frame(reason, frame_id))
        if not self.errors.take():
            self.close(CLOSE_POLICY, "too many refused frames")

    def _command_acked(self, frame_id):
        """The device has a command: the broker may forget it."""
        mid = self.commands.pop(frame_id, None)
        if mid is None:
            self._refuse(f"no command {frame_id} awaits an ack", None)
            return
        self.client.ack(mid, 1)

    def _publish(self, message):
        """Publish a device's message under its id; its ack goes out once it is stored."""
        if message.msg_id in self.pending:  # sent again before its ack: one answer each
            self.pending[message.msg_id].frames.append((message.id, True))
            return
        if message.msg_id in self.acked:
            self._send(ack_frame(message.id, duplicate=True))
            return
        around = len((self.prefix + message.topic).encode()) + len(message.msg_id.encode())
        limit = self.config["MQTT_MAX_PACKET"] - TOPIC_HEADROOM - around
        if len(message.payload) > limit:
            self._refuse(f"the payload has {len(message.payload)} bytes; at most {limit}", message.id)
            return
        if not self._wait_for_room():
            return
        properties = Properties(PacketTypes.PUBLISH)
        properties.UserProperty = [("msg-id", message.msg_id)]
        info = self.client.publish(
            self.prefix + message.topic, message.payload, qos=1, retain=message.retain, properties=properties
        )
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._refuse("carweb lost its broker connection; send it again after reconnecting", message.id)
            return
        self.pending[message.msg_id] = Awaited([(message.id, False)], time.monotonic(), len(message.payload))
        self.pending_bytes += len(message.payload)
        stored_watch(self.app).wake()

    def _wait_for_room(self):
        """Hold the device back while too much of what it sent awaits storage; False once the socket closes."""
        while len(self.pending) >= MAX_PENDING or self.pending_bytes >= MAX_PENDING_BYTES:
            self.room.clear()
            self.room.wait(ACK_TIMEOUT)
            if self.closing is not None or not self.ws.connected:
                return False
        return True

    def _send(self, frame):
        """Queue a frame for the socket's sender: no greenlet waits on a device that reads slowly."""
        self.outbox.put(frame)

    def _send_loop(self):
        """Send queued frames in order, then the close; a closed socket drops them (the device will send or be sent them again)."""
        for frame in self.outbox:
            try:
                with gevent.Timeout(self.config["CARWEB_WS_PING"]):
                    if isinstance(frame, tuple):
                        self.ws.close(*frame)
                        return
                    self.ws.send(frame)
            except gevent.Timeout:  # the device reads nothing: no ping would get through either
                log.info("device socket %s: it reads nothing; cut off", self.device_id)
                self.ws.abort()
                return
            except (ConnectionClosed, OSError, LocalProtocolError):
                pass

    # -- the stored watch's side ------------------------------------------------------------

    def late_ids(self, before):
        """The message ids this socket has awaited the storage of since before `before` (monotonic)."""
        late = []
        for msg_id, awaited in self.pending.items():  # in publishing order
            if awaited.at > before:
                break
            late.append(msg_id)
        return late

    def stored(self, msg_ids):
        """These messages are stored: ack every frame that carried them."""
        for msg_id in msg_ids:
            for frame_id, duplicate in self._take(msg_id):
                self._send(ack_frame(frame_id, duplicate))
            self.acked[msg_id] = True
        while len(self.acked) > ACKED_REMEMBERED:
            self.acked.popitem(last=False)
        self.room.set()

    def expire(self, now):
        """Give up on messages not stored within ACK_TIMEOUT: the device is told to send them again."""
        for msg_id in self.late_ids(now - ACK_TIMEOUT):
            for frame_id, _ in self._take(msg_id):
                self._send(error_frame(f"not stored within {ACK_TIMEOUT:g} s; send it again", frame_id))
            self.room.set()

    def _take(self, msg_id):
        """Stop waiting for a message: the (frame id, duplicate) pairs to answer."""
        awaited = self.pending.pop(msg_id, None)
        if awaited is None:
            return []
        self.pending_bytes -= awaited.size
        return awaited.frames


def _wait_published(info, timeout):
    """Wait (cooperatively) until the broker has a QoS 1 message, at most `timeout` seconds."""
    with contextlib.suppress(RuntimeError, ValueError):  # the connection went away meanwhile
        info.wait_for_publish(timeout)


def close_device_sockets(app, code=CLOSE_RESTART, reason="carweb is restarting; reconnect"):
    """Close every device socket of this process (on shutdown), so devices reconnect elsewhere at once."""
    for connection in list(app.extensions.get(CONNECTIONS_KEY, ())):
        connection.close(code, reason)
