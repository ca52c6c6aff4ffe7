"""Limits that keep one device, or one burst, from exhausting the bridge: held bytes, log lines."""

import time

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
