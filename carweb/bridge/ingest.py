"""The bridge's database steps: number a batch, store it exactly once, whatever it holds.

`prepare_batch` loads the batch's devices into the book, leaves out redeliveries of
stored messages and numbers the rest; `store_messages` inserts them so that a retried
batch stores nothing twice and no content can stop the batch: a document the driver or
the server refuses is stored raw (its exact bytes, with the reason), and one that cannot
be stored at all is counted and logged. Device documents are written behind the stream by `flush.py`.
"""

import logging

from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError, WriteError
from pymongo.write_concern import WriteConcern

from carweb import metrics
from carweb.bridge.book import DeviceState, state_from_document
from carweb.bridge.limits import RateLimitedLog
from carweb.models import Device, Message

log = logging.getLogger(__name__)
DUPLICATE_KEY = 11000
# The broker ack depends on this write, so it must be on disk whatever the URI says.
JOURNALED = WriteConcern(j=True)
# SecantusDB answers `$in` on more than about a hundred values disproportionately slowly.
IN_CHUNK = 100
# How many of a device's newest messages a redelivery without a message id is compared with.
REDELIVERY_SPAN = 4000
MAX_RENUMBERING = 5
PROBE = 8  # numbers one probe for a device's highest number reads
DEVICE_STATE_FIELDS = {"device_id": 1, "last_seq": 1, "message_count": 1, "last_seen_at": 1}
DEVICE_STATE_FIELDS.update(created_at=1, online=1)
# Fields a stored-raw document keeps: what the page and the ack need, and the exact bytes.
RAW_FIELDS = ("_id", "device_id", "topic", "seq", "qos", "retain", "direction", "received_at", "size")
RAW_FIELDS += ("truncated", "msg_id", "redelivered", "payload")
refused_log = RateLimitedLog(log)


def messages_collection():
    """The `messages` collection with the journaled write concern of the bridge."""
    return Message._get_collection().with_options(write_concern=JOURNALED)


def prepare_batch(book, docs):
    """Hold the batch's devices in the book, leave out redeliveries, number the rest in arrival order."""
    load_devices(book, [doc["device_id"] for doc in docs])
    fresh = skip_redeliveries(book, docs)
    book.number(fresh)
    return fresh


def load_devices(book, device_ids):
    """Read the devices the book does not hold (new devices get an empty state)."""
    unknown = book.unknown(device_ids)
    collection = Device._get_collection()
    for first in range(0, len(unknown), IN_CHUNK):
        part = unknown[first : first + IN_CHUNK]
        found = {
            d["device_id"]: d for d in collection.find({"device_id": {"$in": part}}, DEVICE_STATE_FIELDS)
        }
        for device_id in part:
            doc = found.get(device_id)
            book.load(state_from_document(doc) if doc else DeviceState(device_id))


def skip_redeliveries(book, docs):
    """Leave out messages the broker sent again (MQTT DUP) that are already stored.

    A redelivery is a stored message of the same device with the same message id, or,
    without one, the same topic and payload, among the device's REDELIVERY_SPAN newest
    (the unacknowledged ones of a bridge that stopped are its newest). Read by number,
    so every server answers it from the history index.
    """
    suspects = {doc["device_id"] for doc in docs if doc.get("redelivered")}
    if not suspects:
        return docs
    collection = Message._get_collection()
    stored = set()
    for device_id in suspects:
        lowest = max(book.get(device_id).next_seq - REDELIVERY_SPAN, 0)
        query = {"device_id": device_id, "seq": {"$gt": lowest}}
        stored.update(
            map(_fingerprint, collection.find(query, {"device_id": 1, "topic": 1, "payload": 1, "msg_id": 1}))
        )
    left = [d for d in docs if not d.get("redelivered") or _fingerprint(d) not in stored]
    metrics.duplicates.inc(len(docs) - len(left))
    return left


def _fingerprint(doc):
    """How a possible redelivery is recognised among stored messages."""
    if doc.get("msg_id") is not None:
        return doc["device_id"], doc["msg_id"]
    return doc["device_id"], doc["topic"], bytes(doc.get("payload") or b"")


def store_messages(book, docs):
    """Store a numbered batch exactly once; return the documents stored because of it, in order."""
    stored = insert_messages(book, messages_collection(), docs)
    metrics.stored.inc(len(stored))
    metrics.batches.inc()
    return stored


def insert_messages(book, collection, docs, renumbered=0):
    """Insert unordered; return the documents that are stored because of this batch.

    A duplicate `_id` is an earlier try of this batch (stored); a duplicate message id a
    redelivery (skipped); a duplicate number a device numbered elsewhere (numbered again).
    """
    if not docs:
        return []
    try:
        collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        return _sort_out(book, collection, docs, exc.details["writeErrors"], renumbered)
    except PyMongoError:
        raise  # the database is unreachable or failing as a whole: the writer retries the batch
    except Exception:  # noqa: BLE001 - the driver could not encode a document: find which
        return _insert_each(book, collection, docs, renumbered)
    return docs


def _sort_out(book, collection, docs, errors, renumbered):
    """After a partly failed insert: keep what is stored, number clashes again, store refusals raw."""
    outcome = {error["index"]: duplicate_key(error) for error in errors}
    ours = _already_stored(collection, [docs[i] for i, key in outcome.items() if key is not None])
    outcome.update({i: "_id" for i, key in outcome.items() if docs[i]["_id"] in ours})
    clashes = [docs[i] for i, key in outcome.items() if key == "seq"]
    refused = [docs[i] for i, key in outcome.items() if key is None]
    metrics.duplicates.inc(sum(key == "msg_id" for key in outcome.values()))
    stored = [doc for i, doc in enumerate(docs) if outcome.get(i, "_id") == "_id"]
    stored += _insert_each(book, collection, refused, renumbered)
    stored += _renumber(book, collection, clashes, renumbered)
    return _in_batch_order(docs, stored)


def _already_stored(collection, docs):
    """The `_id`s of these documents that are stored: an earlier try of the batch wrote them.

    A retried document clashes on every unique key at once, and servers name any one of
    them, so a clash is ours whenever our `_id` is there.
    """
    if not docs:
        return set()
    return {doc["_id"] for doc in collection.find({"_id": {"$in": [d["_id"] for d in docs]}}, {"_id": 1})}


def _insert_each(book, collection, docs, renumbered):
    """Insert one by one: a document refused as it is is stored raw, or dropped if even that fails."""
    stored, clashes = [], []
    for doc in docs:
        result = _insert_one(collection, doc)
        if result == "seq":
            clashes.append(doc)
        elif result == "_id" or result is True:
            stored.append(doc)
        elif result == "msg_id":
            metrics.duplicates.inc()
        else:
            raw = raw_document(doc, result)
            if _insert_one(collection, raw) in (True, "_id"):
                metrics.stored_raw.inc()
                stored.append(raw)
            else:
                drop(doc, "refused by the database even raw")
    return _in_batch_order(docs, stored + _renumber(book, collection, clashes, renumbered))


def _insert_one(collection, doc):
    """True when stored; the clashing key for a duplicate; else why the document was refused."""
    try:
        collection.insert_one(doc)
    except DuplicateKeyError as exc:
        if _already_stored(collection, [doc]):
            return "_id"
        return duplicate_key(exc.details or {}) or f"duplicate key: {exc}"[:200]
    except WriteError as exc:
        return f"refused by the database: {exc}"[:200]
    except PyMongoError:
        raise
    except Exception as exc:  # noqa: BLE001 - an encoding error of this document only
        return f"cannot be encoded: {exc.__class__.__name__}: {exc}"[:200]
    return True


def _renumber(book, collection, docs, renumbered):
    """Number clashing documents above what their devices have in the database, then insert them."""
    if not docs:
        return []
    if renumbered >= MAX_RENUMBERING:
        raise RuntimeError("message numbers keep clashing: is a second bridge writing?")
    for device_id in {doc["device_id"] for doc in docs}:
        highest = highest_seq(collection, device_id, book.get(device_id).next_seq)
        log.warning("device %s: numbers up to %d were taken elsewhere; numbering above", device_id, highest)
        book.skip_to(device_id, highest)
    book.number(docs)
    return insert_messages(book, collection, docs, renumbered + 1)


def highest_seq(collection, device_id, start):
    """The highest number a stored message of the device has, at least `start`, in a few small reads.

    Gallops upward (8, 16, 32... numbers above what it found) with probes of PROBE numbers
    until one finds nothing, then bisects between: about 2 log2(distance) probes of at
    most PROBE documents, where reading the whole distance would cost a document each.
    A gap of PROBE numbers or more exactly at a probe could hide messages above it; gaps
    are rare and short (a message id sent twice, a message nothing could store).
    """
    found = _highest_in(collection, device_id, start, start + PROBE)
    if found is None:
        return start
    step = PROBE
    while (above := _highest_in(collection, device_id, found + step - PROBE, found + step)) is not None:
        found, step = above, step * 2
    ceiling = found + step - PROBE  # nothing in (ceiling, found + step]
    while ceiling - found > PROBE:
        middle = (found + ceiling) // 2
        low = max(found, middle - PROBE)
        hit = _highest_in(collection, device_id, low, middle)
        found, ceiling = (hit, ceiling) if hit is not None else (found, low)
    last = _highest_in(collection, device_id, found, ceiling)
    return found if last is None else last


def _highest_in(collection, device_id, low, high):
    """The highest number of the device's messages in (low, high], or None."""
    probe = {"device_id": device_id, "seq": {"$gt": low, "$lte": high}}
    return max((doc["seq"] for doc in collection.find(probe, {"seq": 1})), default=None)


def duplicate_key(error):
    """Which unique key a write error clashed on: '_id', 'msg_id', 'seq', or None if not a clash."""
    if error.get("code") != DUPLICATE_KEY:
        return None
    pattern = error.get("keyPattern") or {}
    message = error.get("errmsg", "")
    for key, index in (("seq", "device_seq"), ("msg_id", "device_msg_id")):
        if key in pattern or f"index: {index} " in message:
            return key
    return "_id"


def raw_document(doc, reason):
    """The exact bytes of a message and what the page needs, when its decoded form cannot be stored."""
    raw = {key: doc[key] for key in RAW_FIELDS if key in doc}
    raw.update(kind="binary", raw_reason=reason)
    return raw


def drop(doc, reason):
    """Count and log (rate-limited) a message that cannot be stored; the bridge acks it anyway."""
    metrics.dropped.labels(reason=reason).inc()
    refused_log.warning(reason, "message on %r not stored: %s", str(doc.get("topic"))[:200], reason)


def _in_batch_order(docs, stored):
    """`stored` in the order of `docs` (stored-raw copies stand in for their originals)."""
    position = {doc["_id"]: n for n, doc in enumerate(docs)}
    return sorted(stored, key=lambda doc: position[doc["_id"]])
