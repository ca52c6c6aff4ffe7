"""Acks after storage: a process's device sockets learn here when their messages are stored.

A WebSocket device's message is stored by whichever bridge the broker hands it to, in
this process or another, so the socket that took it cannot hear of the write. It reads
instead: one greenlet per process asks `messages` every POLL_SECONDS, while any socket
waits, which of the waiting messages are stored (the unique `(device_id, msg_id)` index
answers). A poll costs one read per IN_CHUNK waiting messages, whichever devices they
are of, and waits as long again as its reads took.
"""

import logging
import time

import gevent
import gevent.event
from pymongo.errors import PyMongoError

from carweb.models import Message

log = logging.getLogger(__name__)
POLL_SECONDS = 0.02
IN_CHUNK = 100  # SecantusDB answers `$in` on more than about a hundred values slowly
WATCH_KEY = "carweb.stored_watch"
EXPIRE_EVERY = 1.0  # seconds between looks for messages waited on too long


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
    """Polls for the messages its waiters published and tells each waiter which are stored.

    A waiter has `device_id`, `waiting_ids()` (the message ids it waits for) and
    `stored(ids)`; `expire(now)` lets it give up on messages that take too long.
    """

    def __init__(self, app):
        self.app = app
        self.waiters = set()
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

    def _run(self):
        """Poll while anyone waits; sleep on the event otherwise."""
        with self.app.app_context():
            while True:
                self._work.wait()
                self._work.clear()  # before the poll: a wake during it makes another
                gevent.sleep(POLL_SECONDS)
                if self.poll():
                    self._work.set()

    def poll(self):
        """One read of everything waited for; True while anyone still waits."""
        waiting = [(waiter, waiter.waiting_ids()) for waiter in list(self.waiters)]
        pairs = [(waiter.device_id, msg_id) for waiter, ids in waiting for msg_id in ids]
        if not pairs:
            return False
        started = time.monotonic()
        try:
            found = stored_pairs(pairs)
        except PyMongoError as exc:
            log.warning("cannot read which messages are stored (%s); trying again", exc)
            gevent.sleep(1)
            return True
        for waiter, ids in waiting:
            stored = {msg_id for msg_id in ids if (waiter.device_id, msg_id) in found}
            if stored:
                waiter.stored(stored)
        now = time.monotonic()
        if now - self._expired_at >= EXPIRE_EVERY:
            self._expired_at = now
            for waiter, _ in waiting:
                waiter.expire(now)
        gevent.sleep(now - started)  # reads that take long are made less often
        return True


def stored_watch(app):
    """The process's watch (made on first use)."""
    watch = app.extensions.get(WATCH_KEY)
    if watch is None:
        watch = app.extensions[WATCH_KEY] = StoredWatch(app)
    return watch
