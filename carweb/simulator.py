"""A fleet of simulated cars speaking the device side of carweb's MQTT contract."""

import json
import math
import random
import threading
import time
import uuid
from dataclasses import dataclass, field

from carweb.bridge.mqtt import build_client, parse_mqtt_url
from carweb.simulator_updates import FirmwareAgent, UpdateBehaviour
from carweb.simulator_ws import DeviceSocketClient, socket_url

NAMESPACE = uuid.UUID("6f1c3a52-5a4e-4d8e-9a53-0b4c1f3e8d21")
EARTH_RADIUS_KM = 6371.0
SUBSCRIBE_TIMEOUT = 10


def simulated_device_id(prefix, number):
    """A stable UUID per simulated car, so a restarted simulator keeps its devices."""
    return str(uuid.uuid5(NAMESPACE, f"{prefix}-{number}"))


@dataclass
class Car:
    """The state of one car, advanced by `step` and reported by `telemetry`."""

    device_id: str
    lat: float
    lon: float
    heading: float = field(default_factory=lambda: random.uniform(0, 360))
    speed: float = 0.0
    odometer: float = field(default_factory=lambda: random.uniform(1000, 150000))
    battery: float = field(default_factory=lambda: random.uniform(12.2, 12.8))
    fuel: float = field(default_factory=lambda: random.uniform(20, 100))
    coolant: float = field(default_factory=lambda: random.uniform(15, 25))  # °C, a cold engine
    seq: int = 0

    def step(self, seconds):
        """Drive for `seconds`: speed wanders, the car moves along its heading."""
        target = random.choice((0, 30, 50, 80, 110, 130)) if random.random() < 0.05 else self.speed
        self.speed = max(0.0, min(180.0, self.speed + (target - self.speed) * 0.3 + random.gauss(0, 2)))
        self.heading = (self.heading + random.gauss(0, 5)) % 360
        km = self.speed * seconds / 3600
        self.odometer += km
        self.lat += math.degrees(km / EARTH_RADIUS_KM) * math.cos(math.radians(self.heading))
        self.lon += (
            math.degrees(km / EARTH_RADIUS_KM)
            * math.sin(math.radians(self.heading))
            / max(math.cos(math.radians(self.lat)), 0.01)
        )
        self.fuel = max(0.0, self.fuel - km * 0.07)
        charging = 13.8 if self.speed > 0 else 12.5
        self.battery += (charging - self.battery) * 0.1 + random.gauss(0, 0.02)
        # The engine warms towards its thermostat's 90 °C, a little above it under load.
        warm = 90 + self.speed / 30
        self.coolant += (warm - self.coolant) * min(seconds / 120, 1) + random.gauss(0, 0.1)

    def telemetry(self):
        """One telemetry message as JSON bytes."""
        self.seq += 1
        rpm = 800 + self.speed * 25 + random.gauss(0, 50) if self.speed > 1 else 800 + random.gauss(0, 20)
        return json.dumps(
            {
                "msg_id": f"{self.device_id[:8]}-{self.seq}-{int(time.time() * 1000)}",
                "ts": round(time.time(), 3),
                "speed": round(self.speed, 1),
                "rpm": int(rpm),
                "battery": round(self.battery, 2),
                "fuel": round(self.fuel, 1),
                "odometer": round(self.odometer, 1),
                "coolant_temp": round(self.coolant, 1),
                "position": {"lat": round(self.lat, 6), "lon": round(self.lon, 6)},
            }
        ).encode()


class Fleet:
    """N cars publishing at `rate` msg/s, each on its own connection: MQTT with a last will,
    or the device WebSocket (`sockets`: {device id: token} and carweb's `url`).

    Each car also takes firmware updates as `updates` (an UpdateBehaviour) says.
    """

    def __init__(self, url, count, rate, prefix="sim", updates=None, sockets=None):
        if sockets is None:
            parse_mqtt_url(url)  # fail early on a bad URL
        self.url = url
        self.rate = rate
        self.updates = updates or UpdateBehaviour()
        self.sockets = sockets
        self.cars = [
            Car(
                simulated_device_id(prefix, n),
                52.52 + random.uniform(-0.2, 0.2),
                13.40 + random.uniform(-0.3, 0.3),
            )
            for n in range(count)
        ]
        self.clients = {}
        self.agents = {}
        self._stop = threading.Event()

    def connect(self):
        """Connect every car, over MQTT or its WebSocket."""
        for car in self.cars:
            connect = self._connect_socket if self.sockets is not None else self._connect_mqtt
            self.clients[car.device_id] = connect(car)

    def _connect_mqtt(self, car):
        """Last will `offline` on <id>/status, then `online` there.

        A car says `online` only once it is subscribed to its firmware topics, so a command
        sent as soon as carweb sees it is not lost.
        """
        config = {"MQTT_URL": self.url, "MQTT_PROTOCOL": "3.1.1"}
        client, address = build_client(
            config, manual_ack=False, client_id=f"sim-{car.device_id}", persistent=False
        )
        client.will_set(f"{car.device_id}/status", "offline", qos=1, retain=True)
        agent = self.agents[car.device_id] = FirmwareAgent(car.device_id, client, self.updates)
        client.on_connect = lambda *_, agent=agent: agent.subscribe()
        client.on_subscribe = lambda *_, agent=agent: agent.subscribed.set()
        client.on_message = lambda _client, _userdata, msg, agent=agent: agent.on_message(msg)
        client.connect(address.host, address.port, keepalive=30)
        client.loop_start()
        agent.subscribed.wait(SUBSCRIBE_TIMEOUT)
        client.publish(f"{car.device_id}/status", "online", qos=1, retain=True)
        return client

    def _connect_socket(self, car):
        """carweb says `online` and `offline` for a socket itself, and sends it its commands."""
        client = DeviceSocketClient(socket_url(self.url), car.device_id, self.sockets[car.device_id])
        agent = self.agents[car.device_id] = FirmwareAgent(car.device_id, client, self.updates)
        client.on_message = agent.on_message
        client.connect(SUBSCRIBE_TIMEOUT)
        return client

    def run(self, duration=None):
        """Publish telemetry until stopped, Ctrl-C, or `duration` seconds have passed."""
        self.connect()
        interval = 1.0 / self.rate
        deadline = time.monotonic() + duration if duration else None
        next_tick = time.monotonic()
        try:
            while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
                for car in self.cars:
                    car.step(interval)
                    self.clients[car.device_id].publish(f"{car.device_id}/telemetry", car.telemetry(), qos=1)
                next_tick += interval
                self._stop.wait(max(0.0, next_tick - time.monotonic()))
        except KeyboardInterrupt:
            pass
        finally:
            self.disconnect()

    def stop(self):
        """Ask `run` to return."""
        self._stop.set()

    def disconnect(self):
        """Say `offline` (carweb says it for sockets) and close every connection."""
        for device_id, client in self.clients.items():
            if self.sockets is not None:
                client.disconnect()
                continue
            client.publish(f"{device_id}/status", "offline", qos=1, retain=True).wait_for_publish(2)
            client.disconnect()
            client.loop_stop()
