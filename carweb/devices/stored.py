"""Acks after storage: a process's device sockets learn here when their messages are stored.

A WebSocket device's message is stored by whichever bridge the broker hands it to, in
this process or another, so the socket that took it cannot hear of the write. It reads
instead: one greenlet per process asks `messages` every POLL_SECONDS, while any socket
waits, which of the waiting message ids are stored (the unique `(device_id, msg_id)`
index answers). A poll costs one small read per waiting device, however many messages
each waits for (up to IN_CHUNK per read).
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


def stored_ids(device_id, msg_ids):
    """Those of a device's message ids that are stored."""
    collection = Message._get_collection()
    found = set()
    for first in range(0, len(msg_ids), IN_CHUNK):
        query = {"device_id": device_id, "msg_id": {"$in": msg_ids[first : first + IN_CHUNK]}}
        found.update(doc["msg_id"] for doc in collection.find(query, {"msg_id": 1, "_id": 0}))
    return found


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
                gevent.sleep(POLL_SECONDS)
                if not self.poll():
                    self._work.clear()

    def poll(self):
        """One round over the waiters; True while any still waits."""
        busy, now = False, time.monotonic()
        for waiter in list(self.waiters):
            ids = waiter.waiting_ids()
            if not ids:
                continue
            try:
                found = stored_ids(waiter.device_id, ids)
            except PyMongoError as exc:
                log.warning("cannot read which messages are stored (%s); trying again", exc)
                gevent.sleep(1)
                return True
            if found:
                waiter.stored(found)
            waiter.expire(now)
            busy = busy or bool(waiter.waiting_ids())
        return busy


def stored_watch(app):
    """The process's watch (made on first use)."""
    watch = app.extensions.get(WATCH_KEY)
    if watch is None:
        watch = app.extensions[WATCH_KEY] = StoredWatch(app)
    return watch
