"""Acks after storage: a process's device sockets learn here when their messages are stored.

A WebSocket device's message is stored by whichever bridge the broker hands it to. When
that is this process's own bridge, its stored batches come here (a topic handler, like
ota's) and the waiting sockets are answered at once. A bridge elsewhere (external
bridges, a shared subscription) cannot tell this process, so what is still waited for
after POLL_AFTER_LOCAL seconds (POLL_AFTER_REMOTE without a bridge here) is looked up in `messages` (the unique `(device_id, msg_id)`
index), one read per IN_CHUNK messages, every POLL_SECONDS at most: the same look finds
a message sent again that had been stored before.
"""

import logging
import time
from functools import partial

import gevent
import gevent.event
from pymongo.errors import PyMongoError

from carweb.background import running_bridge
from carweb.bridge.dispatch import register_topic_handler
from carweb.bridge.ingest import IN_CHUNK
from carweb.models import Message

log = logging.getLogger(__name__)
POLL_SECONDS = 0.05
# How long a message is waited for before it is looked up: with a bridge in this process,
# long enough for it to have stored and reported the message (a look costs SecantusDB
# about 15 ms per 100 messages, so it is kept for the rest: repeats, and messages another
# process's bridge stored), and five while that bridge has a queue; without one, at once.
POLL_AFTER_LOCAL = 1.0
POLL_AFTER_BUSY = 5.0
POLL_AFTER_REMOTE = 0.05
WATCH_KEY = "carweb.stored_watch"
EXPIRE_EVERY = 1.0  # seconds between looks for messages waited on too long


def init_app(app):
    """Have this process's bridge report every stored message to the device sockets' watch."""
    register_topic_handler(app, "#", partial(report_stored, app))


def report_stored(app, docs):
    """Bridge handler: the watch learns which of the messages it waits for are stored (no database read)."""
    watch = app.extensions.get(WATCH_KEY)
    if watch is not None and watch.waiters:
        watch.stored_here((doc["device_id"], doc["msg_id"]) for doc in docs if "msg_id" in doc)


def stored_pairs(pairs):
    """Those of the (device id, message id) pairs that are stored, IN_CHUNK pairs a read."""
    collection = Message._get_collection()
    found = set()
    for first in range(0, len(pairs), IN_CHUNK):
        part = pairs[first : first + IN_CHUNK]
        query = {
            "device_id": {"$in": sorted({device_id for device_id, _ in part})},
            "msg_id": {"$in": sorted({msg_id for _, msg_id in part})},
        }
        stored = collection.find(query, {"device_id": 1, "msg_id": 1, "_id": 0})
        found.update((doc["device_id"], doc["msg_id"]) for doc in stored)
    return found & set(pairs)


class StoredWatch:
    """Tells each waiter which of the messages it published are stored.

    A waiter has `device_id`, `pending` (the message ids it waits for), `late_ids(before)`
    (those it has waited for since before that time), `stored(ids)` and `expire(now)`
    (gives up on messages that take too long). `stored` is called from the watch's own
    greenlet only, never from the bridge's.
    """

    def __init__(self, app):
        self.app = app
        self.waiters = set()
        self._heard = set()  # pairs this process's bridge stored, not yet handed out
        self._work = gevent.event.Event()
        self._greenlet = None
        self._expired_at = 0.0

    def add(self, waiter):
        """Watch for a waiter's messages until `remove`."""
        self.waiters.add(waiter)
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._run)

    def remove(self, waiter):
        """Stop watching for a waiter (its socket closed)."""
        self.waiters.discard(waiter)

    def wake(self):
        """A waiter has a new message to wait for."""
        self._work.set()

    def stored_here(self, pairs):
        """(device id, message id) pairs this process's bridge has stored."""
        self._heard.update(pairs)
        self._work.set()

    def _run(self):
        """Answer what the bridge reported, poll for the rest while anyone waits, sleep otherwise."""
        with self.app.app_context():
            while True:
                self._work.wait()
                self._work.clear()  # before the round: a wake during it makes another
                gevent.sleep(POLL_SECONDS)
                if self.round():
                    self._work.set()

    def round(self):
        """Hand out what was heard, then read what has waited long enough; True while anyone still waits."""
        heard, self._heard = self._heard, set()
        now = time.monotonic()
        waiters, by_device = list(self.waiters), {}
        for waiter in waiters:
            by_device.setdefault(waiter.device_id, []).append(waiter)
        _hand_out(by_device, heard)
        before = now - self._patience()
        self._look_up(by_device, [(w.device_id, msg_id) for w in waiters for msg_id in w.late_ids(before)])
        if now - self._expired_at >= EXPIRE_EVERY:
            self._expired_at = now
            for waiter in waiters:
                waiter.expire(now)
        return any(waiter.pending for waiter in waiters)

    def _patience(self):
        """Seconds a message is waited for before it is read: longer while this process's bridge has a queue.

        Queued messages will be reported, and reads would slow their inserts; but a message
        stored before (a resend) or elsewhere is never reported, so it is read in the end.
        """
        bridge = running_bridge(self.app)
        if bridge is None:
            return POLL_AFTER_REMOTE
        busy = bridge.queue is not None and bridge.queue.qsize() > 0
        return POLL_AFTER_BUSY if busy else POLL_AFTER_LOCAL

    def _look_up(self, by_device, pairs):
        """Read which of the (device id, message id) pairs are stored and tell their waiters."""
        if not pairs:
            return
        started = time.monotonic()
        try:
            found = stored_pairs(pairs)
        except PyMongoError as exc:
            log.warning("cannot read which messages are stored (%s); trying again", exc)
            gevent.sleep(1)
            return
        _hand_out(by_device, found)
        gevent.sleep(time.monotonic() - started)  # reads that take long are made less often


def _hand_out(by_device, pairs):
    """Tell each waiter which of the stored (device id, message id) pairs it waits for."""
    found = {}
    for device_id, msg_id in pairs:
        for waiter in by_device.get(device_id, ()):
            if msg_id in waiter.pending:
                found.setdefault(waiter, set()).add(msg_id)
    for waiter, ids in found.items():
        waiter.stored(ids)


def stored_watch(app):
    """The process's watch (made on first use)."""
    watch = app.extensions.get(WATCH_KEY)
    if watch is None:
        watch = app.extensions[WATCH_KEY] = StoredWatch(app)
    return watch
