"""A low-CPU MQTT 3.1.1 load generator: a fleet of devices, each on its own TCP connection.

Usage: python -m bench.loadgen --port 1883 --out summary.json [--devices 10000] [--rate 900]
    [--bursters 5] [--poison 1] [--duration 600] [--ready-file PATH] [--stop-file PATH]
Steady devices publish QoS 1 telemetry at random moments that add up to `--rate` msg/s;
bursters publish `--burst-size` messages back to back now and then; poison devices send one
hostile payload per second. It runs beside the system under test, so it uses asyncio
callbacks and hand-encoded packets (stdlib only) to leave the CPU to the broker and carweb.
At the end it writes a JSON summary (published and acknowledged messages per device) to `--out`.
"""

import argparse
import asyncio
import json
import os
import random
import resource
import secrets
import signal
import time
from pathlib import Path

from bench.mqtt_wire import (
    CONNACK,
    DISCONNECT,
    PINGREQ,
    PUBACK,
    PacketStream,
    connect_packet,
    mqtt_string,
    publish_packet,
)

# A refused or silent broker must not hold a device forever; a broken link is retried soon.
CONNECT_TIMEOUT, RECONNECT_DELAY = 15.0, 1.0
PING_SWEEP_SECONDS, DRAIN_SECONDS, POLL_SECONDS = 5.0, 10.0, 0.25
POISON_INTERVAL = 1.0


def telemetry_tails(count=64):
    """Pre-built JSON endings with speed and rpm, so a publish only formats `n` and `t`."""
    speeds = (round(20 + 110 * k / count, 1) for k in range(count))
    return [b', "speed": %.1f, "rpm": %d}' % (speed, 800 + speed * 25) for speed in speeds]


TELEMETRY_TAILS = telemetry_tails()


def telemetry_payload(n, sent_at, tail, with_msg_id):
    """The JSON telemetry of message `n` sent at unix time `sent_at` (ms precision)."""
    if with_msg_id:
        return b'{"n": %d, "t": %.3f, "msg_id": "%d"%s' % (n, sent_at, n, tail)
    return b'{"n": %d, "t": %.3f%s' % (n, sent_at, tail)


def with_counter(prefix, suffix=b"}"):
    """A payload maker that puts the poison device's counter between `prefix` and `suffix`."""
    return lambda n: prefix + b"%d" % n + suffix


def fixed(payload):
    """A payload maker that always sends the same bytes."""
    return lambda n: payload


def poison_payloads():
    """(kind, maker) pairs of hostile payloads; a maker turns the message number into bytes."""
    filler = [{"i": i, "text": "x" * 90} for i in range(2680)]
    return [
        ("lone_surrogate_value", with_counter(b'{"x": "\\ud800", "n": ')),
        ("lone_surrogate_key", with_counter(b'{"\\udc00": 1, "n": ')),
        ("nul_in_value", with_counter(b'{"x": "a\\u0000b", "n": ')),
        ("nul_in_key", with_counter(b'{"a\\u0000b": 1, "n": ')),
        ("noncharacters", with_counter(b'{"x": "\\uffff\\ufdd0", "\\uffff": 2, "n": ')),
        ("invalid_utf8_bytes", fixed(b"\xff\xfe\x80")),
        ("invalid_utf8_in_json", with_counter(b'{"x": "\xff\xfe\x80", "n": ')),
        ("integer_5000_digits", with_counter(b'{"x": ' + b"9" * 5000 + b', "n": ')),
        ("float_1e400", with_counter(b'{"x": 1e400, "n": ')),
        ("nested_10000_deep", fixed(b'{"x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}")),
        ("key_100kb", with_counter(b'{"' + b"k" * 102_400 + b'": 1, "n": ')),
        ("dollar_key", with_counter(b'{"$where": "sleep(1000)", "$set": {"a": 1}, "n": ')),
        ("dotted_key", with_counter(b'{"a.b": 1, "c": {"d.e": 2}, "n": ')),
        ("empty", fixed(b"")),
        ("random_400kib", fixed(os.urandom(400 * 1024))),
        ("json_300kib", with_counter(json.dumps({"filler": filler}).encode()[:-1] + b', "n": ')),
        ("plain_json", with_counter(b'{"speed": 50.5, "rpm": 2100, "n": ')),
    ]


class Device:
    """One simulated device: its link, counters and the QoS 1 messages not yet acknowledged."""

    __slots__ = ("device_id", "topic_field", "n", "published", "acked", "unacked_n", "outstanding")
    __slots__ += ("packet_id", "transport", "last_write", "loop", "handle", "due")

    def __init__(self, device_id, topic_suffix="telemetry"):
        self.device_id = device_id
        self.topic_field = mqtt_string(f"{device_id}/{topic_suffix}")
        self.n = self.published = self.acked = self.packet_id = 0
        self.unacked_n, self.outstanding = [], {}
        self.transport = self.loop = self.handle = None
        self.last_write = self.due = 0.0

    def start(self, loop, started_at):
        """Begin publishing on `loop`, the first time at a random phase after `started_at`."""
        self.loop, self.due = loop, started_at + self.first_gap()
        self.handle = loop.call_at(self.due, self.tick)

    def tick(self):
        """Do what is due now, then plan the next moment."""
        self.on_due()
        self.due += self.next_gap()
        self.handle = self.loop.call_at(self.due, self.tick)

    def first_gap(self):
        """Seconds from the start until the first moment: a random phase within one gap."""
        return random.uniform(0, self.next_gap())

    def next_gap(self):
        """Seconds from one moment to the next."""
        raise NotImplementedError

    def on_due(self):
        """Publish what is due now."""
        raise NotImplementedError

    def stop(self):
        """Publish nothing more."""
        if self.handle is not None:
            self.handle.cancel()

    def connected(self, transport):
        """The broker accepted the connection: publish over `transport` from now on."""
        self.transport, self.last_write = transport, time.monotonic()
        self.resume()

    def resume(self):
        """Continue any work the device had to wait for (a burst waits for its window)."""

    def disconnected(self):
        """The link is gone: messages still in flight will never be acknowledged."""
        self.transport = None
        self.unacked_n.extend(self.outstanding.values())
        self.outstanding.clear()

    def write(self, data):
        """Send bytes on the link and note when, for the keepalive."""
        self.transport.write(data)
        self.last_write = time.monotonic()

    def publish(self, payload):
        """Send `payload` as QoS 1 message number `n` with the next packet id."""
        self.packet_id = self.packet_id % 65535 + 1
        self.outstanding[self.packet_id] = self.n
        self.write(publish_packet(self.topic_field, self.packet_id, payload))
        self.n += 1
        self.published += 1

    def publish_telemetry(self, with_msg_id=False):
        """Publish telemetry message `n`, its time `t` taken right before the write."""
        tail = TELEMETRY_TAILS[self.n % len(TELEMETRY_TAILS)]
        self.publish(telemetry_payload(self.n, time.time(), tail, with_msg_id))

    def acknowledge(self, packet_id):
        """The broker sent PUBACK for `packet_id`."""
        n = self.outstanding.pop(packet_id, None)
        if n is not None:
            self.acked += 1
            self.acknowledged(n)

    def acknowledged(self, n):
        """Message `n` was acknowledged."""

    def report(self):
        """This device's entry in the summary."""
        return {"published": self.published, "acked": self.acked, "unacked_n": sorted(self.unacked_n)}


class SteadyDevice(Device):
    """Publishes telemetry on average every `period` seconds, each gap jittered by +-50 %."""

    __slots__ = ("period", "with_msg_id")

    def __init__(self, device_id, period, with_msg_id):
        super().__init__(device_id)
        self.period, self.with_msg_id = period, with_msg_id

    def first_gap(self):
        """A phase spread evenly over one period."""
        return random.uniform(0, self.period)

    def next_gap(self):
        """A gap of 0.5 to 1.5 periods, so devices drift apart instead of firing in lock-step."""
        return self.period * random.uniform(0.5, 1.5)

    def on_due(self):
        """One telemetry message; skipped while the link is down."""
        if self.transport is not None:
            self.publish_telemetry(self.with_msg_id)


class BurstDevice(Device):
    """Silent, then at random moments `size` messages back to back, `window` unacknowledged at most."""

    __slots__ = ("every", "size", "window", "remaining")

    def __init__(self, device_id, every, size, window):
        super().__init__(device_id)
        self.every, self.size, self.window, self.remaining = every, size, window, 0

    def first_gap(self):
        """Bursts have no phase: the first waits like any other."""
        return self.next_gap()

    def next_gap(self):
        """Bursts start as a Poisson process with mean gap `every`."""
        return random.expovariate(1.0 / self.every)

    def on_due(self):
        """Start a burst (a running one grows by `size`); without a link it starts on reconnect."""
        self.remaining += self.size
        self.resume()

    def resume(self):
        """Publish burst messages while the window has room."""
        while self.remaining and self.transport is not None and len(self.outstanding) < self.window:
            self.remaining -= 1
            self.publish_telemetry()

    def acknowledged(self, n):
        """An acknowledgement frees a place in the window."""
        self.resume()

    def stop(self):
        """Abandon the rest of any running burst."""
        super().stop()
        self.remaining = 0


class PoisonDevice(Device):
    """Publishes one hostile payload per second on `<id>/poison`, cycling through `kinds`."""

    __slots__ = ("kinds", "log")

    def __init__(self, device_id, kinds):
        super().__init__(device_id, topic_suffix="poison")
        self.kinds, self.log = kinds, []

    def next_gap(self):
        """One message per second."""
        return POISON_INTERVAL

    def on_due(self):
        """The next kind of poison, logged so its acknowledgement can be recorded; none without a link."""
        if self.transport is None:
            return
        kind, make = self.kinds[self.n % len(self.kinds)]
        self.log.append([kind, False])
        self.publish(make(self.n))

    def acknowledged(self, n):
        """Note that poison message `n` was acknowledged."""
        self.log[n][1] = True


class Link(asyncio.Protocol):
    """One device's TCP connection: sends CONNECT, reads CONNACK, PUBACK and PINGRESP."""

    def __init__(self, device, connect_bytes, on_lost):
        self.device, self.connect_bytes, self.on_lost = device, connect_bytes, on_lost
        self.stream, self.transport = PacketStream(), None
        self.connack = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        """TCP is up: say CONNECT."""
        self.transport = transport
        transport.write(self.connect_bytes)

    def data_received(self, data):
        """Route PUBACKs to the device and the CONNACK return code to whoever waits for it."""
        try:
            packets = self.stream.feed(data)
        except ValueError:  # a malformed stream cannot be resynchronised
            self.transport.close()
            return
        for first_byte, body in packets:
            kind = first_byte & 0xF0
            if kind == PUBACK and len(body) >= 2:
                self.device.acknowledge(int.from_bytes(body[:2], "big"))
            elif kind == CONNACK and len(body) >= 2 and not self.connack.done():
                self.connack.set_result(body[1])

    def connection_lost(self, exc):
        """Before CONNACK this fails the connect; afterwards the device has lost its link."""
        if not self.connack.done():
            self.connack.set_exception(ConnectionError(f"closed before CONNACK: {exc}"))
        elif self.device.transport is self.transport:
            self.device.disconnected()
            self.on_lost(self.device)


def build_devices(args, prefix):
    """The steady devices, then the bursters, then the poison devices."""
    period = args.devices / args.rate
    with_msg_id = set(random.sample(range(args.devices), round(args.msg_id_share * args.devices)))
    devices = [SteadyDevice(f"{prefix}-{n}", period, n in with_msg_id) for n in range(args.devices)]
    for device in devices:
        device.topic_field = mqtt_string(f"{device.device_id}/{args.topic}")
    devices += [
        BurstDevice(f"{prefix}-burst-{k}", args.burst_every, args.burst_size, args.burst_window)
        for k in range(args.bursters)
    ]
    kinds = poison_payloads() if args.poison else []
    return devices + [PoisonDevice(f"{prefix}-poison-{k}", kinds) for k in range(args.poison)]


def cpu_seconds():
    """User plus system CPU seconds of this process so far."""
    times = os.times()
    return times.user + times.system


def raise_open_file_limit(needed):
    """Raise the soft limit on open files towards the hard limit; warn when even that is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if hard != resource.RLIM_INFINITY and hard < needed:
        print(f"loadgen: open-file hard limit {hard} is below the {needed} this run needs")


class ConnackRefused(Exception):
    """The broker refused a CONNECT (bad credentials or client id): retrying will not help."""


class LoadRun:
    """One run: connect every device at a bounded rate, publish, drain, disconnect, summarise."""

    def __init__(self, args, prefix, devices):
        self.args, self.prefix, self.devices = args, prefix, devices
        self.loop, self.tasks, self.last_error = None, set(), None
        self.reconnects = self.connect_failures = 0
        self.closing = self.stop_requested = False

    async def open_link(self, device):
        """Connect `device` and wait until the broker accepts it."""
        args = self.args
        packet = connect_packet(device.device_id, args.keepalive, args.username, args.password)
        transport, link = await self.loop.create_connection(
            lambda: Link(device, packet, self.link_lost), args.host, args.port
        )
        try:
            code = await link.connack
        except BaseException:
            transport.close()
            raise
        if code != 0:
            transport.close()
            raise ConnackRefused(f"{device.device_id}: CONNACK return code {code}")
        device.connected(transport)

    async def connect(self, device):
        """Connect `device`, retrying after a short pause until it is accepted or the run closes."""
        while not self.closing:
            try:
                await asyncio.wait_for(self.open_link(device), CONNECT_TIMEOUT)
                return
            except (OSError, TimeoutError) as exc:
                self.connect_failures += 1
                self.last_error = f"{device.device_id}: {exc!r}"
                await asyncio.sleep(RECONNECT_DELAY * random.uniform(1, 2))

    def link_lost(self, device):
        """A connected device lost its link: reconnect it after a short pause unless the run closes."""
        if self.closing:
            return
        self.reconnects += 1
        task = self.loop.create_task(self.reconnect(device))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def reconnect(self, device):
        """Wait a moment (the broker may be busy or restarting), then connect again."""
        await asyncio.sleep(RECONNECT_DELAY * random.uniform(1, 2))
        try:
            await self.connect(device)
        except ConnackRefused as exc:  # the device stays offline; the summary names the reason
            self.last_error = str(exc)

    async def connect_all(self):
        """Open every device's connection, at most `--connect-rate` new ones per second."""
        started, tasks = self.loop.time(), []
        for index, device in enumerate(self.devices):
            ahead = started + index / self.args.connect_rate - self.loop.time()
            if ahead > 0.01:  # sleep in steps of ~10 ms, not once per connection
                await asyncio.sleep(ahead)
            tasks.append(self.loop.create_task(self.connect(device)))
        await asyncio.gather(*tasks)

    async def keep_alive(self):
        """Every few seconds, send PINGREQ on each link idle for half the keepalive."""
        if not self.args.keepalive:
            return
        while True:
            await asyncio.sleep(min(PING_SWEEP_SECONDS, self.args.keepalive / 4))
            idle_since = time.monotonic() - self.args.keepalive / 2
            for device in self.devices:
                if device.transport is not None and device.last_write <= idle_since:
                    device.write(PINGREQ)

    def should_stop(self):
        """Tell whether a signal or the stop file asks to end publishing early."""
        return self.stop_requested or bool(self.args.stop_file and os.path.exists(self.args.stop_file))

    async def publish(self):
        """Run every device for `--duration` seconds or until asked to stop; the seconds it ran."""
        started = self.loop.time()
        for device in self.devices:
            device.start(self.loop, started)
        deadline = started + self.args.duration
        while not self.should_stop() and (left := deadline - self.loop.time()) > 0:
            await asyncio.sleep(min(POLL_SECONDS, left))
        for device in self.devices:
            device.stop()
        return self.loop.time() - started

    async def drain(self):
        """Wait a little for the acknowledgements still on their way."""
        deadline = self.loop.time() + DRAIN_SECONDS
        while self.loop.time() < deadline and any(device.outstanding for device in self.devices):
            await asyncio.sleep(0.1)

    def close_all(self):
        """Stop reconnecting, send DISCONNECT on every link and close it; in-flight messages stay unacked."""
        self.closing = True
        for task in list(self.tasks):
            task.cancel()
        for device in self.devices:
            transport = device.transport
            if transport is not None:
                device.write(DISCONNECT)
                device.disconnected()
                transport.close()

    async def run(self):
        """The whole run; returns the summary."""
        self.loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(signum, setattr, self, "stop_requested", True)
        started_at, connect_started = time.time(), time.monotonic()
        pinger = self.loop.create_task(self.keep_alive())
        await self.connect_all()
        connect_seconds = time.monotonic() - connect_started
        if self.args.ready_file:
            Path(self.args.ready_file).touch()
        cpu_before = cpu_seconds()
        publish_seconds = await self.publish()
        publish_cpu = cpu_seconds() - cpu_before
        await self.drain()
        self.close_all()
        pinger.cancel()
        await asyncio.sleep(0.5)  # closing transports flush DISCONNECT first
        timing = {"started_at": started_at, "connect_seconds": connect_seconds}
        return self.summary(timing, publish_seconds, publish_cpu)

    def summary(self, timing, publish_seconds, publish_cpu):
        """The JSON summary: per device counts and unacknowledged numbers, poison results, rates, CPU."""
        published = sum(device.published for device in self.devices)
        poison = [device for device in self.devices if isinstance(device, PoisonDevice)]
        return {
            "prefix": self.prefix,
            "devices": {device.device_id: device.report() for device in self.devices},
            "poison": [
                {"device": device.device_id, "kind": kind, "acked": acked}
                for device in poison
                for kind, acked in device.log
            ],
            **timing,
            "ended_at": time.time(),
            "cpu_seconds": cpu_seconds(),
            "reconnects": self.reconnects,
            "messages_per_s": published / publish_seconds if publish_seconds else 0.0,
            "published": published,
            "acked": sum(device.acked for device in self.devices),
            "publish_seconds": publish_seconds,
            "publish_cpu_seconds": publish_cpu,
            "connect_failures": self.connect_failures,
            "last_connect_error": self.last_error,
            "msg_id_devices": [d.device_id for d in self.devices if getattr(d, "with_msg_id", False)],
        }


def summary_paragraph(summary):
    """One paragraph for stdout saying what the run did."""
    published, poison = summary["published"], summary["poison"]
    per_thousand = 1000 * summary["publish_cpu_seconds"] / published if published else 0.0
    return (
        f"loadgen {summary['prefix']}: {len(summary['devices'])} devices connected in "
        f"{summary['connect_seconds']:.1f} s ({summary['connect_failures']} failed attempts); "
        f"published {published} messages in {summary['publish_seconds']:.1f} s "
        f"({summary['messages_per_s']:.1f} msg/s), {summary['acked']} acked, "
        f"{published - summary['acked']} not acked, {summary['reconnects']} reconnects; "
        f"poison {len(poison)} sent, {sum(entry['acked'] for entry in poison)} acked; "
        f"CPU {summary['cpu_seconds']:.1f} s in all, {per_thousand:.3f} s per 1,000 messages while publishing."
    )


def positive(text):
    """An argparse type: a number above zero."""
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not above zero")
    return value


def add_broker_options(parser):
    """Where the broker is and how devices log in."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--keepalive", type=int, default=120, help="seconds; PINGREQ after half of it idle")
    parser.add_argument("--connect-rate", type=positive, default=2000, help="new connections per second")


def add_fleet_options(parser):
    """How many devices of each kind, and how they publish."""
    parser.add_argument("--devices", type=int, default=10_000, help="steady devices")
    parser.add_argument("--prefix", help="device id prefix (default: random hex)")
    parser.add_argument("--rate", type=positive, default=900, help="msg/s of all steady devices together")
    parser.add_argument("--msg-id-share", type=float, default=0.5, help="share of steady devices with msg_id")
    parser.add_argument("--topic", default="telemetry", help="steady devices publish on <id>/TOPIC")
    parser.add_argument("--bursters", type=int, default=5)
    parser.add_argument("--burst-every", type=positive, default=60, help="mean seconds between bursts")
    parser.add_argument("--burst-size", type=int, default=1500)
    parser.add_argument("--burst-window", type=int, default=50, help="unacknowledged messages at most")
    parser.add_argument("--poison", type=int, default=1, help="devices sending hostile payloads")


def add_run_options(parser):
    """How long to run, and the files that talk to the benchmark."""
    parser.add_argument("--duration", type=float, default=600, help="seconds of publishing")
    parser.add_argument("--out", required=True, help="JSON summary written at the end")
    parser.add_argument("--ready-file", help="touched once every device is connected")
    parser.add_argument("--stop-file", help="publishing stops early when this file appears")
    parser.add_argument("--seed", type=int, help="random seed, for a repeatable schedule")


def parse_args(argv=None):
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_broker_options(parser)
    add_fleet_options(parser)
    add_run_options(parser)
    args = parser.parse_args(argv)
    if args.password is not None and args.username is None:
        parser.error("--password needs --username (MQTT 3.1.1)")
    if not 0 <= args.msg_id_share <= 1:
        parser.error("--msg-id-share must lie between 0 and 1")
    return args


def main(argv=None):
    """Entry point of `python -m bench.loadgen`."""
    args = parse_args(argv)
    if args.seed is not None:
        random.seed(args.seed)
    if args.ready_file:
        Path(args.ready_file).unlink(missing_ok=True)  # a stale one would start the benchmark too early
    prefix = args.prefix or secrets.token_hex(4)
    devices = build_devices(args, prefix)
    raise_open_file_limit(len(devices) + 64)
    try:
        summary = asyncio.run(LoadRun(args, prefix, devices).run())
    except ConnackRefused as exc:
        raise SystemExit(f"loadgen: the broker refused a device: {exc}") from None
    Path(args.out).write_text(json.dumps(summary))
    print(summary_paragraph(summary), flush=True)


if __name__ == "__main__":
    main()
