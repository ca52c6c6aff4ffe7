"""paho-mqtt client set-up: broker URL, TLS, credentials and a persistent session."""

import select
import ssl
from dataclasses import dataclass
from types import SimpleNamespace
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

SCHEMES = {"mqtt": (False, 1883), "mqtts": (True, 8883), "ssl": (True, 8883), "tcp": (False, 1883)}
PROTOCOLS = {"5": MQTTProtocolVersion.MQTTv5, "3.1.1": MQTTProtocolVersion.MQTTv311}
PACKET_HEADROOM = 64 * 1024


@dataclass(frozen=True)
class BrokerAddress:
    """Where and how to reach the broker, parsed from MQTT_URL."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None


def parse_mqtt_url(url):
    """Parse `mqtt://user:pass@host:port` or `mqtts://...`; raise ValueError when malformed."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"MQTT_URL must start with mqtt:// or mqtts://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"MQTT_URL has no host: {url!r}")
    tls, default_port = SCHEMES[parts.scheme]
    return BrokerAddress(
        host=parts.hostname,
        port=parts.port or default_port,
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def share_property_tables():
    """Make paho's Properties() cheap: share its lookup tables instead of rebuilding them.

    paho-mqtt 2.2 builds three tables (about 40 entries) in every Properties(), and makes
    one for every MQTT 5 message received; profiling the bridge under load put 40 % of its
    CPU there. The tables are only read, so one copy serves all (pinned by a test).
    """
    if getattr(Properties, "_carweb_shared", False):
        return
    template = Properties(PacketTypes.PUBLISH)
    tables = {"types": template.types, "names": template.names, "properties": template.properties}
    compressed = [name.replace(" ", "") for name in template.names]

    def __init__(self, packetType):  # noqa: N807, N803 - paho's own signature
        self.packetType = packetType
        self.__dict__.update(tables)

    def clear(self):
        for name in compressed:
            self.__dict__.pop(name, None)

    Properties.__init__, Properties.clear, Properties._carweb_shared = __init__, clear, True


def poll_select(rlist, wlist, xlist, timeout=None):
    """select.select's answer for paho's loop, found with poll(): no limit on descriptor numbers.

    select() refuses descriptors from 1024 (FD_SETSIZE) on, with a ValueError that paho
    takes for a lost connection, and gevent's select() asks the real one first. A web
    process with a thousand open sockets (device WebSockets, pages) hands out such
    numbers to the MQTT connections it opens then. Under gevent, `select.poll` is gevent's.
    """
    poller = select.poll()
    masks = {}
    for sock in rlist:
        masks[sock] = masks.get(sock, 0) | select.POLLIN
    for sock in wlist:
        masks[sock] = masks.get(sock, 0) | select.POLLOUT
    by_fd = {}
    for sock, mask in masks.items():
        by_fd[sock.fileno()] = sock
        poller.register(sock, mask)
    ready = poller.poll(None if timeout is None else timeout * 1000)
    lost = select.POLLHUP | select.POLLERR | select.POLLNVAL  # a read then tells paho why
    readable = [by_fd[fd] for fd, event in ready if event & (select.POLLIN | lost)]
    writable = [by_fd[fd] for fd, event in ready if event & (select.POLLOUT | select.POLLERR)]
    return readable, writable, []


def use_poll_in_paho():
    """Have paho's loop wait with `poll_select` (its module's `select.select` is the only one it calls)."""
    mqtt.select = SimpleNamespace(select=poll_select)


# What a TLS failure means to an operator, by the words OpenSSL puts in it.
TLS_PROBLEMS = (
    (
        (
            "ALERT_UNKNOWN_CA",
            "ALERT_BAD_CERTIFICATE",
            "ALERT_CERTIFICATE_REQUIRED",
            "ALERT_CERTIFICATE_UNKNOWN",
        ),
        "the broker refused carweb's client certificate (MQTT_CERT_FILE, MQTT_KEY_FILE)",
    ),
    (
        ("CERTIFICATE_VERIFY_FAILED",),
        "carweb does not trust the broker's certificate (MQTT_CA_FILE, and the host name in MQTT_URL)",
    ),
    (
        ("WRONG_VERSION_NUMBER", "record layer failure"),
        "the broker does not speak TLS on this port (mqtts:// to a plain port?)",
    ),
)


def describe_connect_problem(text):
    """One line an operator can act on, from an exception's or paho's text about a failed connection."""
    for markers, meaning in TLS_PROBLEMS:
        if any(marker.lower() in text.lower() for marker in markers):
            return f"{meaning}: {text}"
    return text


class BridgeClient(mqtt.Client):
    """paho's client, reading every packet that has arrived in one loop turn instead of one.

    paho 2.2 reads a single packet per turn of its loop (unless it has QoS 2 traffic in
    flight), and each turn waits in select(), which under gevent is a trip through the
    hub: with the writers, the finisher and web requests ready to run, a burst then sat
    in the socket's buffer for tens of milliseconds. Reading stops when the socket has
    nothing more (paho's sockets are non-blocking) or after READ_BURST packets.
    """

    READ_BURST = 256
    on_problem = None  # called with a line describing why connecting failed

    def reconnect(self):
        """paho's reconnect, telling `on_problem` why it failed (paho itself only retries)."""
        try:
            return super().reconnect()
        except OSError as exc:
            self._report_problem(f"{exc.__class__.__name__}: {exc}")
            raise

    def _easy_log(self, level, fmt, *args):
        """paho's log; a TLS alert read from the socket (a refused client certificate) goes to `on_problem` too.

        Over TLS 1.3 the broker checks the client certificate after the handshake, so the
        refusal arrives as an alert on the first read, which paho only logs. (Setting
        `on_log` instead would make paho format a line for every packet.)
        """
        if level == mqtt.MQTT_LOG_ERR and fmt.startswith("failed to receive on socket") and args:
            text = str(args[0])
            if "ALERT" in text.upper():
                self._report_problem(text)
        return super()._easy_log(level, fmt, *args)

    def _report_problem(self, text):
        """Pass a connection problem to `on_problem`, described for an operator."""
        if self.on_problem is not None:
            self.on_problem(describe_connect_problem(text))

    def loop_read(self, max_packets=1):
        """Read and handle the packets that have arrived (up to READ_BURST)."""
        for _ in range(self.READ_BURST):
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                break
        return MQTTErrorCode.MQTT_ERR_SUCCESS


def build_client(config, manual_ack=True, client_id=None, persistent=True):
    """A paho client configured from carweb's config, not yet connected."""
    share_property_tables()
    use_poll_in_paho()
    address = parse_mqtt_url(config["MQTT_URL"])
    protocol = PROTOCOLS.get(str(config.get("MQTT_PROTOCOL", "5")))
    if protocol is None:
        raise ValueError("MQTT_PROTOCOL must be 5 or 3.1.1")
    v311_session = {} if protocol == MQTTProtocolVersion.MQTTv5 else {"clean_session": not persistent}
    client = BridgeClient(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or config["MQTT_CLIENT_ID"],
        protocol=protocol,
        manual_ack=manual_ack,
        **v311_session,
    )
    if address.username:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        client.tls_set(
            ca_certs=config.get("MQTT_CA_FILE"),
            certfile=config.get("MQTT_CERT_FILE"),
            keyfile=config.get("MQTT_KEY_FILE"),
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client, address


def connect_async(client, address, config, persistent=True):
    """Start connecting; MQTT 5 sessions are resumed (no clean start) and kept for a week."""
    keepalive = int(config.get("MQTT_KEEPALIVE", 30))
    if client.protocol != MQTTProtocolVersion.MQTTv5:
        client.connect_async(address.host, address.port, keepalive)
        return
    properties = Properties(PacketTypes.CONNECT)
    if persistent:
        properties.SessionExpiryInterval = config["MQTT_SESSION_EXPIRY"]
        properties.ReceiveMaximum = config["MQTT_RECEIVE_MAXIMUM"]
        # Room for the topic and properties around the largest packet a device may send,
        # so a broker without a limit cannot push a message of any size into our memory.
        properties.MaximumPacketSize = config["MQTT_MAX_PACKET"] + PACKET_HEADROOM
    client.connect_async(
        address.host,
        address.port,
        keepalive,
        clean_start=not persistent,
        properties=properties,
    )
