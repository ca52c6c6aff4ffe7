"""Helpers of the ingest tests: the bridge's own steps, run one after the other on one batch."""

from types import SimpleNamespace

from carweb.bridge.book import DeviceBook
from carweb.bridge.documents import build_documents
from carweb.bridge.flush import flush_devices
from carweb.bridge.ingest import prepare_batch, store_messages
from carweb.bridge.rollups import flush_rollups

MAX_PAYLOAD = 256 * 1024


def ingest(docs, book=None, rollups=None):
    """Number, store, count and flush one batch as the bridge's writer, finisher and flusher do.

    A fresh book per call (the default) reads the devices back from the database, as a
    restarted bridge would; pass one book to follow one bridge process, and a RollupBook
    to keep its telemetry rollups as well.
    """
    book = book if book is not None else DeviceBook()
    stored = store_messages(book, prepare_batch(book, docs))
    book.record(stored)
    flush_devices(book)
    if rollups is not None:
        rollups.record(stored, through=book.recorded_through)
        flush_rollups(rollups, "test-bridge")
    return stored


def store_as_bridge(topic, payload, at, book=None):
    """Store one QoS 1 message received `at` as the bridge would; the stored documents."""
    msg = SimpleNamespace(topic=topic, payload=payload, qos=1, retain=False)
    return ingest(build_documents([(msg, at)], MAX_PAYLOAD), book)
