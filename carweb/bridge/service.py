"""The bridge service: network greenlet -> fair bounded queue -> writers -> finisher, acking after storing."""

import itertools
import logging
import socket
import time
from datetime import UTC, datetime

import gevent
import gevent.lock
from gevent.queue import Queue
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.subscribeoptions import SubscribeOptions
from pymongo.errors import PyMongoError

from carweb import live, metrics
from carweb.bridge.book import DeviceBook
from carweb.bridge.dispatch import dispatch
from carweb.bridge.documents import document_or_none
from carweb.bridge.flush import flush_devices, recover_unflushed
from carweb.bridge.folds import fold_closed
from carweb.bridge.ingest import prepare_batch, store_messages
from carweb.bridge.limits import ArrivalWatermark, ByteBudget, FairQueue, held_bytes
from carweb.bridge.mqtt import build_client, connect_async, parse_mqtt_url
from carweb.bridge.rollups import RollupBook, flush_rollups, recover_rollups
from carweb.bridge.topics import subscription

log = logging.getLogger(__name__)
MAX_BACKOFF = 30
# Concurrent batch writes: two keep the database busy while the bridge turns one reply
# into the next request. One writer gave a slightly higher ingest ratio in benchmarks
# (mean 0.89 against 0.84) but at 100 msg/s a median latency above 10 ms in 6 of 11
# runs (up to 37 ms), against 5.8-12.6 ms with two (docs/decisions.md).
WRITERS = 2
# Device documents are written this often (at most); live device updates go out this often.
FLUSH_SECONDS = 1.0
FLUSH_YIELD = 4
LIVE_DEVICES_SECONDS = 0.5
# Hours (days) of rollups folded per flush: about 5 ms each on SecantusDB, so an hour's end
# with 10,000 devices that spoke is folded over three minutes, never holding up a flush.
FOLDS_PER_FLUSH = 50


def _disable_nagle(client):
    """Send acks at once: Nagle's algorithm holds small packets back for up to 40 ms."""
    sock = client.socket()
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Bridge:
    """Subscribes to every device topic, stores each message, then acks and emits it."""

    def __init__(self, app):
        self.app = app
        self.config = app.config
        self.client = None
        self.queue = None
        self.budget = None
        self.book = DeviceBook()
        self.rollups = RollupBook()
        self.mqtt_state = "connecting"
        self.state = "starting"
        self._connections = 0
        self._supervisor = None

    def start(self):
        """Run the bridge in a supervised greenlet; returns at once."""
        self._supervisor = gevent.spawn(self._supervise)
        return self

    def stop(self):
        """Stop the bridge and disconnect from the broker."""
        if self._supervisor is not None:
            self._supervisor.kill()
        if self.client is not None:
            self.client.disconnect()
        self.state = "stopped"

    def status(self):
        """A dict for /healthz: broker connection and bridge state."""
        return {"mqtt": self.mqtt_state, "bridge": self.state}

    def publish(self, topic, payload, qos=1, retain=False):
        """Publish on the bridge's own connection (the small interface `ota` uses)."""
        if self.client is None:
            raise RuntimeError("the MQTT bridge is not running")
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def _supervise(self):
        """Run the bridge; if it dies, log why and start it again with back-off."""
        delay = 1
        while True:
            started = time.monotonic()
            try:
                self._run_once()
            except gevent.GreenletExit:
                raise
            except Exception:  # noqa: BLE001 - any crash must restart the bridge
                log.exception("MQTT bridge died; restarting with back-off")
                self.state = "restarting"
                metrics.bridge_restarts.inc()
            self.mqtt_state = "disconnected"
            if time.monotonic() - started > 60:
                delay = 1  # it ran a good while: this is a new failure, not a crash loop
            gevent.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    def _run_once(self):
        """Recount what the last run left uncounted, connect, and run the greenlets until one fails."""
        with self.app.app_context():
            self._retry(recover_unflushed, self.book)
            self._retry(recover_rollups, self.rollups, self.config["MQTT_CLIENT_ID"])
        self.queue = FairQueue(self.config["CARWEB_QUEUE_MAX"])
        self.budget = ByteBudget(self.config["CARWEB_QUEUE_BYTES"])
        self.watermark = ArrivalWatermark()
        client, address = build_client(self.config)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_problem = self._connect_problem
        self._problem = None
        self.client = client
        connect_async(client, address, self.config)
        stored = Queue(maxsize=2 * WRITERS)  # stored batches waiting to be acked, in any order
        sequence, numbering = itertools.count(), gevent.lock.Semaphore()
        greenlets = [
            gevent.spawn(client.loop_forever, retry_first_connection=True),
            gevent.spawn(self._finish_loop, client, stored),
            gevent.spawn(self._flush_loop),
            gevent.spawn(self._live_devices_loop),
        ] + [gevent.spawn(self._write_loop, sequence, numbering, stored) for _ in range(WRITERS)]
        self.state = "running"
        try:
            done = gevent.wait(greenlets, count=1)
            for greenlet in done:
                greenlet.get()  # re-raises the exception that ended it
            raise RuntimeError("bridge greenlet ended")
        finally:
            gevent.killall(greenlets)
            client.disconnect()

    def _connect_problem(self, text):
        """Log why connecting fails, once per distinct reason until a connection succeeds (paho retries)."""
        if text != self._problem:
            self._problem = text
            address = parse_mqtt_url(self.config["MQTT_URL"])
            log.error("cannot connect to the broker at %s:%s: %s", address.host, address.port, text)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        """Subscribe to every device topic once the broker accepts us."""
        if reason_code.is_failure:
            self.mqtt_state = f"refused: {reason_code}"
            self._connect_problem(
                f"the broker refused the login: {reason_code} (user and password in MQTT_URL?)"
            )
            return
        self._problem = None
        _disable_nagle(client)
        self._connections += 1
        if self._connections > 1:
            metrics.reconnects.inc()
        self.mqtt_state = "connected"
        topic = subscription(self.config["MQTT_SHARED_GROUP"])
        if client.protocol == MQTTProtocolVersion.MQTTv5:
            # retainHandling=1: retained messages only for a new subscription, so a
            # resumed session does not store every retained status again.
            client.subscribe(topic, options=SubscribeOptions(qos=1, retainHandling=1))
        elif not flags.session_present:
            client.subscribe(topic, qos=1)
        log.info("connected to the broker (session present: %s)", flags.session_present)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        """Record the lost connection; paho reconnects with back-off by itself.

        A connection that never got as far as connected says nothing here: why it
        failed is logged once by `_connect_problem`, not again at every retry.
        """
        if self.mqtt_state == "connected":
            level = (
                logging.INFO if getattr(reason_code, "value", None) == 0 else logging.WARNING
            )  # 0: we asked
            log.log(level, "disconnected from the broker: %s", reason_code)
        self.mqtt_state = "disconnected"

    def _on_message(self, client, userdata, msg):
        """Decode and queue a message under its device; a full queue or byte budget blocks here, so we stop reading.

        Only the document and what the ack needs are kept: not paho's message, which holds
        the whole payload however large.
        """
        metrics.received.inc()
        # Decoding here, in the network greenlet, overlaps it with the writer's database wait.
        doc = document_or_none(msg, datetime.now(UTC), self.config["MQTT_MAX_PAYLOAD"])
        size = held_bytes(doc)
        self.budget.take(size)
        metrics.held_bytes.set(self.budget.used)
        if doc is not None:
            self.watermark.arrived(doc["_id"])
        self.queue.put(doc["device_id"] if doc else "", ((msg.mid, msg.qos, size, time.monotonic()), doc))

    def _write_loop(self, sequence, numbering, stored):
        """Group commit: write whatever is queued as soon as this writer's previous write is done.

        WRITERS of these run at once, so the database always has the next batch while one
        is in flight. Batches are taken and numbered one writer at a time, so message
        numbers follow arrival; `_finish_loop` puts the stored batches back in that order.
        """
        with self.app.app_context():
            while True:
                with numbering:
                    batch = self._next_batch()
                    taken = time.monotonic()
                    number = next(sequence)
                    metrics.queue_depth.set(self.queue.qsize())
                    docs = [doc for _, doc in batch if doc is not None]
                    docs = self._retry(prepare_batch, self.book, docs)
                written = time.monotonic()
                result = self._retry(store_messages, self.book, docs)
                observe_stages(batch, taken, written)
                stored.put((number, batch, result, time.monotonic()))

    def _finish_loop(self, client, stored):
        """In arrival order: count into the book, emit, run domain handlers, ack to the broker.

        Every stored batch that is ready in order is finished together, so under load one
        step serves several batches.
        """
        waiting, expected = {}, 0
        with self.app.app_context():
            while True:
                number, *item = stored.get()
                waiting[number] = item
                while not stored.empty():
                    number, *item = stored.get_nowait()
                    waiting[number] = item
                ready = []
                while expected in waiting:
                    batch, docs, written = waiting.pop(expected)
                    metrics.stage_seconds.labels(stage="order").observe(time.monotonic() - written)
                    ready.append((batch, docs))
                    expected += 1
                if ready:
                    self._finish(client, ready)

    def _finish(self, client, ready):
        """Everything after batches are stored; the acks go out after the domain handlers ran."""
        started = time.monotonic()
        docs = [doc for _, stored in ready for doc in stored]
        arrived = [doc["_id"] for batch, _ in ready for _, doc in batch if doc is not None]
        self.book.record(docs, through=self.watermark.finished(arrived))
        self.rollups.record(docs, through=self.book.recorded_through)
        emit_safely(live.publish_messages, docs)  # pages see stored messages before the handlers
        emitted = time.monotonic()
        for batch, _ in ready:
            for (_, _, _, received), _ in batch:
                metrics.live_seconds.observe(emitted - received)
        self._retry(dispatch, self.app, docs)
        for batch, _ in ready:
            for (mid, qos, size, _), _ in batch:
                if qos:
                    client.ack(mid, qos)
                self.budget.give(size)
        metrics.held_bytes.set(self.budget.used)
        metrics.stage_seconds.labels(stage="finish").observe(time.monotonic() - started)

    def _flush_loop(self):
        """Write changed devices and rollups every FLUSH_SECONDS, leaving the database the rest of its time.

        After each chunk it pauses FLUSH_YIELD times as long as the chunk took, so these
        writes take at most a fifth of the database's time; when they would need more,
        each flush finds more messages per device (and minute) to write at once.
        """
        pause = lambda took: gevent.sleep(took * FLUSH_YIELD)  # noqa: E731
        with self.app.app_context():
            while True:
                gevent.sleep(FLUSH_SECONDS)
                metrics.devices_unflushed.set(self.book.unflushed)
                metrics.rollups_unwritten.set(len(self.rollups.open))
                self._retry(flush_devices, self.book, pause)
                self._retry(flush_rollups, self.rollups, self.config["MQTT_CLIENT_ID"], pause)
                self._retry(fold_closed, self.rollups, None, pause, FOLDS_PER_FLUSH)

    def _live_devices_loop(self):
        """Send the changed devices' counters to the pages every LIVE_DEVICES_SECONDS."""
        while True:
            gevent.sleep(LIVE_DEVICES_SECONDS)
            emit_safely(live.publish_device_states, self.book.take_changed())

    def _next_batch(self):
        """Wait for one message, then take queued ones up to the batch limit, devices in turn."""
        return self.queue.take(self.config["CARWEB_BATCH_MAX"])

    def _retry(self, step, *args):
        """Run `step(*args)`, retrying with back-off while the database is unreachable."""
        delay = 0.1
        while True:
            try:
                result = step(*args)
                self.state = "running"
                return result
            except PyMongoError as exc:
                self.state = "waiting for database"
                metrics.write_retries.inc()
                log.warning("%s failed (%s); retrying in %.1f s", step.__name__, exc, delay)
                gevent.sleep(delay)
                delay = min(delay * 2, 5)


def observe_stages(batch, taken, written):
    """Record how long a batch waited in the queue (its oldest message), was numbered and written."""
    now = time.monotonic()
    arrivals = [arrived for (_, _, _, arrived), _ in batch]
    metrics.stage_seconds.labels(stage="queue").observe(taken - min(arrivals))
    metrics.stage_seconds.labels(stage="number").observe(written - taken)
    metrics.stage_seconds.labels(stage="write").observe(now - written)


def emit_safely(emit, items):
    """Emit live updates; a failure is logged, never allowed to stop the ingest."""
    if not items:
        return
    try:
        emit(items)
    except Exception:  # noqa: BLE001 - pages are a view: the messages are stored and will be acked
        log.exception("live update failed for %d items", len(items))
