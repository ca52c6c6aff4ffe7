"""Limits that keep one device, or one burst, from exhausting the bridge: held bytes, log lines."""

import time
from collections import OrderedDict, deque

import gevent.event

# Python holds a payload several times over while it waits to be stored (bytes, text,
# parsed value, the document), so a held message counts as this many times its payload.
HELD_PER_PAYLOAD_BYTE = 4
HELD_PER_MESSAGE = 512


def held_bytes(doc):
    """The memory a message's document is counted as until it is acknowledged."""
    return (
        HELD_PER_MESSAGE + HELD_PER_PAYLOAD_BYTE * len(doc.get("payload") or b"") if doc else HELD_PER_MESSAGE
    )


class ByteBudget:
    """Bytes of messages between their arrival and their ack; taking waits while over the limit.

    The network greenlet takes before it queues a message, so a full budget stops the
    bridge reading from the broker (which keeps the rest in the session) instead of
    growing the process. A message larger than the whole budget still passes when
    nothing else is held, so it cannot block the bridge for good.
    """

    def __init__(self, limit):
        self.limit = limit
        self.used = 0
        self._freed = gevent.event.Event()

    def take(self, size):
        """Wait until `size` more bytes fit, then hold them."""
        while self.used > 0 and self.used + size > self.limit:
            self._freed.clear()
            self._freed.wait()
        self.used += size

    def give(self, size):
        """Release bytes held by messages that are acknowledged."""
        self.used = max(self.used - size, 0)
        self._freed.set()


class RateLimitedLog:
    """Log a warning per kind at most once per interval, saying how many were left out."""

    def __init__(self, logger, interval=60.0, clock=time.monotonic):
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._last = {}

    def warning(self, kind, message, *args):
        """Log now, or count it towards the next line of this kind."""
        now = self.clock()
        last, left_out = self._last.get(kind, (None, 0))
        if last is not None and now - last < self.interval:
            self._last[kind] = (last, left_out + 1)
            return
        if left_out:
            message += " (and %d more since the last report)"
            args += (left_out,)
        self.logger.warning(message, *args)
        self._last[kind] = (now, 0)


class FairQueue:
    """Messages waiting to be written, one queue per device, taken in turns.

    A device that sends a thousand messages at once would otherwise put every other
    device's messages behind its own: a batch takes an equal share of each waiting
    device, the devices in turn, so a burst is spread over several smaller batches and
    everyone else's messages go into the next one instead of waiting for a large write.
    The share is the batch limit over the devices waiting, and at least TURN: with
    hundreds of devices waiting it is TURN, with a few it still fills the batch (larger
    batches cost less per message). Each device's messages keep their order. `put`
    waits while `maxsize` messages are held.
    """

    TURN = 32

    def __init__(self, maxsize):
        self.maxsize = maxsize
        self._devices = OrderedDict()  # device -> deque of items, in the order of their turns
        self._size = 0
        self._changed = gevent.event.Event()

    def qsize(self):
        """How many messages are waiting."""
        return self._size

    def put(self, device_id, item):
        """Queue an item of a device, waiting while the queue is full."""
        while self._size >= self.maxsize:
            self._changed.clear()
            self._changed.wait()
        self._devices.setdefault(device_id, deque()).append(item)
        self._size += 1
        self._changed.set()

    def take(self, limit):
        """Wait for at least one item, then take up to `limit`: a share of each device, devices in turn."""
        while not self._size:
            self._changed.clear()
            self._changed.wait()
        batch = []
        share = max(self.TURN, limit // len(self._devices))
        for device_id in list(self._devices):
            if len(batch) >= limit:
                break
            items = self._devices.pop(device_id)
            for _ in range(min(share, limit - len(batch), len(items))):
                batch.append(items.popleft())
            if items:
                self._devices[device_id] = items  # back in line, behind the others
        self._size -= len(batch)
        self._changed.set()
        return batch


class ArrivalWatermark:
    """The newest message _id up to which every message received has been finished.

    The fair queue finishes messages out of arrival order, so the last one finished says
    nothing of older ones still waiting; the flush checkpoint must not pass those.
    """

    def __init__(self):
        self._arrivals = deque()
        self._finished = set()
        self.through = None

    def arrived(self, message_id):
        """A message entered the pipeline."""
        self._arrivals.append(message_id)

    def finished(self, message_ids):
        """These messages are stored and counted, or left out; return the new watermark."""
        self._finished.update(message_ids)
        while self._arrivals and self._arrivals[0] in self._finished:
            self.through = self._arrivals.popleft()
            self._finished.discard(self.through)
        return self.through
