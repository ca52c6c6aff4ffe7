"""Device WebSockets as a fleet uses them: a connect storm, bursts after silence, a flooder, a reconnect storm.

Usage: python -m bench.sockets [--devices 300] [--burst 20] [--rounds 3]

N devices with their own tokens connect at once (as after a restart of carweb). They
stay silent, then all send a backlog of `--burst` messages at once (a car leaving a
tunnel), `--rounds` times, while one more device floods malformed and over-rate frames.
Then every socket drops and reconnects at once. Prints the time to `ready` for each
storm, each message's time from sent to acked (p50/p99), what was stored (each message
exactly once), what the flooder got, and the web worker's memory per connected socket.
"""

import argparse
import json
import threading
import time

import websocket

from bench.download import rss_kib, worker_pid
from bench.latency import percentile
from bench.stack import benchmark_stack
from carweb.models.token import DeviceToken
from carweb.simulator_ws import socket_url


def make_tokens(stack, device_ids):
    """A device token per device, stored as `flask device token` stores them; {device id: secret}."""
    minted = {device_id: DeviceToken.mint("bench") for device_id in device_ids}
    with stack.mongo() as mongo:
        mongo[stack.db_name].device_tokens.insert_many(
            [{**stored, "device_id": device_id} for device_id, (_, stored) in minted.items()]
        )
    return {device_id: secret for device_id, (secret, _) in minted.items()}


class Device:
    """One device's socket: connect, send a backlog, collect acks with their delay."""

    def __init__(self, url, device_id, secret):
        self.url, self.device_id, self.secret = url, device_id, secret
        self.ws = None
        self.sent = {}
        self.delays = []
        self.errors = []
        self.counter = 0

    def connect(self):
        """Open the socket; seconds until carweb's `ready`."""
        started = time.perf_counter()
        self.ws = websocket.create_connection(
            self.url, header=[f"Authorization: Bearer {self.secret}"], timeout=120
        )
        opcode, data = self.ws.recv_data(control_frame=True)
        if opcode != websocket.ABNF.OPCODE_TEXT or "ready" not in json.loads(data):
            raise RuntimeError(f"{self.device_id} not ready: {int.from_bytes(data[:2], 'big')} {data[2:]!r}")
        return time.perf_counter() - started

    def burst(self, count):
        """Send `count` messages at once, then read until each is answered."""
        for _ in range(count):
            self.counter += 1
            msg_id = f"{self.device_id}-{self.counter}"
            self.sent[msg_id] = time.perf_counter()
            self.ws.send(json.dumps({"topic": "telemetry", "payload": {"n": self.counter}, "id": msg_id}))
        for _ in range(count):
            frame = json.loads(self.ws.recv())
            if "ack" in frame:
                self.delays.append(time.perf_counter() - self.sent.pop(frame["ack"]))
            else:
                self.errors.append(frame)


def flood(url, secret, stop, answers):
    """Malformed and over-rate frames as fast as the socket takes them, until closed or stopped."""
    ws = websocket.create_connection(url, header=[f"Authorization: Bearer {secret}"], timeout=30)
    frames = ["{not json", json.dumps({"topic": "t", "payload": 1, "id": "x"})] * 5000
    try:
        for frame in frames:
            if stop.is_set():
                break
            ws.send(frame)
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                answers.append(f"closed: {int.from_bytes(data[:2], 'big')} {data[2:].decode()}")
                return
            answers.append(data)
    except (websocket.WebSocketException, OSError) as exc:
        answers.append(f"closed: {exc.__class__.__name__}")


def all_at_once(devices, action):
    """Run `action(device)` for every device in its own thread, all started together; the results."""
    results = [None] * len(devices)

    def run(index):
        results[index] = action(devices[index])

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(devices))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def report_storm(name, seconds):
    """Print the connect times of a storm."""
    print(
        f"{name}: {len(seconds)} sockets ready, p50 {percentile(seconds, 0.5) * 1000:.0f} ms, "
        f"p99 {percentile(seconds, 0.99) * 1000:.0f} ms, last {max(seconds):.2f} s"
    )


def run(args):
    """Start the stack, run the storms and bursts, print the figures."""
    with benchmark_stack() as stack:
        base = stack.start_carweb(CARWEB_WORKER_CONNECTIONS=str(args.devices + 100))
        url = socket_url(base)
        worker = worker_pid(stack.processes[-1].pid)
        ids = [f"ws-bench-{n:05d}" for n in range(args.devices + 1)]
        secrets = make_tokens(stack, ids)
        devices = [Device(url, device_id, secrets[device_id]) for device_id in ids[:-1]]
        before = rss_kib(worker)
        report_storm("connect storm", all_at_once(devices, Device.connect))
        time.sleep(2)
        connected = rss_kib(worker)
        print(
            f"worker memory: {before / 1024:.1f} MiB before, {connected / 1024:.1f} MiB with "
            f"{len(devices)} sockets ({(connected - before) / len(devices):.0f} KiB per socket)"
        )
        stop, flooded = threading.Event(), []
        flooder = threading.Thread(target=flood, args=(url, secrets[ids[-1]], stop, flooded), daemon=True)
        flooder.start()
        for round_ in range(args.rounds):
            time.sleep(args.silence)
            started = time.perf_counter()
            all_at_once(devices, lambda d: d.burst(args.burst))
            took = time.perf_counter() - started
            print(f"burst {round_ + 1}: {len(devices) * args.burst} messages answered in {took:.2f} s")
        stop.set()
        delays = [delay for device in devices for delay in device.delays]
        errors = [error for device in devices for error in device.errors]
        print(
            f"acks: {len(delays)}, sent to acked p50 {percentile(delays, 0.5) * 1000:.0f} ms, "
            f"p99 {percentile(delays, 0.99) * 1000:.0f} ms; error frames to the fleet: {len(errors)}"
        )
        print(f"flooder: {len(flooded)} answers, last: {flooded[-1] if flooded else None}")
        for device in devices:
            device.ws.close()
        report_storm("reconnect storm", all_at_once(devices, Device.connect))
        with stack.mongo() as mongo:
            messages = mongo[stack.db_name].messages
            expected = len(devices) * args.burst * args.rounds
            stored = messages.count_documents({"topic": {"$regex": "^ws-bench-.*/telemetry$"}})
            distinct = len(messages.distinct("msg_id", {"topic": {"$regex": "/telemetry$"}}))
        print(f"stored: {stored} of {expected} messages, {distinct} distinct ids")
        for device in devices:
            device.ws.close()


def main():
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=300)
    parser.add_argument("--burst", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--silence", type=float, default=5.0, help="seconds of silence before each burst")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
