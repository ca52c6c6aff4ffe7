"""Batch writer: store a batch of message documents exactly once, then update their devices."""

import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import timedelta

from bson import ObjectId
from bson.errors import InvalidDocument
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, DocumentTooLarge, DuplicateKeyError, WriteError
from pymongo.write_concern import WriteConcern

from carweb import metrics
from carweb.bridge.topics import is_status_topic
from carweb.models import Device, Message

log = logging.getLogger(__name__)
DUPLICATE_KEY = 11000
REDELIVERY_WINDOW = timedelta(minutes=1)
# The broker ack depends on this write, so it must be on disk whatever the URI says.
JOURNALED = WriteConcern(j=True)


@dataclass
class IngestResult:
    """What one batch stored (for live updates) and how many redeliveries it skipped."""

    stored: list = field(default_factory=list)
    devices: list = field(default_factory=list)
    duplicates: int = 0


def ingest_batch(docs):
    """Store new messages, skip redeliveries, update devices; return what was stored."""
    result = store_messages(docs)
    result.devices = update_devices(result.stored)
    return result


def store_messages(docs):
    """Store a batch's new messages exactly once (the devices are updated separately)."""
    fresh = skip_recent_redeliveries(docs)
    stored = insert_messages(fresh)
    duplicates = len(docs) - len(stored)
    metrics.duplicates.inc(duplicates)
    metrics.stored.inc(len(stored))
    metrics.batches.inc()
    return IngestResult(stored=stored, duplicates=duplicates)


def insert_messages(docs):
    """Insert unordered; return the documents that are now stored because of this batch.

    A duplicate of our own `_id` means an earlier try of this batch stored it: stored. A
    duplicate of (device_id, msg_id) from another `_id` is a redelivery: skipped.
    """
    if not docs:
        return []
    collection = Message._get_collection().with_options(write_concern=JOURNALED)
    try:
        collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details["writeErrors"]
        rejected = {e["index"] for e in errors if e["code"] != DUPLICATE_KEY}
        duplicated = [e["index"] for e in errors if e["code"] == DUPLICATE_KEY]
        return _drop(docs, rejected | _redeliveries(collection, docs, duplicated), rejected)
    except (InvalidDocument, DocumentTooLarge):
        return _insert_each(collection, docs)
    return docs


def _redeliveries(collection, docs, duplicated):
    """Indexes of duplicate-key documents that are not our own earlier writes."""
    if not duplicated:
        return set()
    ours = {
        d["_id"] for d in collection.find({"_id": {"$in": [docs[i]["_id"] for i in duplicated]}}, {"_id": 1})
    }
    return {i for i in duplicated if docs[i]["_id"] not in ours}


def _insert_each(collection, docs):
    """Insert one by one after a batch the driver refused, dropping what cannot be stored."""
    rejected, skipped = set(), set()
    for index, doc in enumerate(docs):
        try:
            collection.insert_one(doc)
        except DuplicateKeyError:
            skipped |= _redeliveries(collection, docs, [index])
        except (InvalidDocument, DocumentTooLarge, WriteError):
            rejected.add(index)
    return _drop(docs, rejected | skipped, rejected)


def _drop(docs, left_out, rejected):
    """Count and log rejected documents; return those not left out."""
    for index in sorted(rejected):
        metrics.dropped.labels(reason="rejected by database").inc()
        log.error("message on %s rejected by the database", docs[index]["topic"])
    return [doc for index, doc in enumerate(docs) if index not in left_out]


def skip_recent_redeliveries(docs):
    """Drop MQTT redeliveries without a message id that match a message stored in the last minute."""
    suspects = [d for d in docs if d.get("redelivered") and "msg_id" not in d]
    if not suspects:
        return docs
    seen = set()
    collection = Message._get_collection()
    for device_id in {d["device_id"] for d in suspects}:
        since = min(d["received_at"] for d in suspects if d["device_id"] == device_id) - REDELIVERY_WINDOW
        recent = collection.find(
            {"device_id": device_id, "received_at": {"$gt": since}}, {"topic": 1, "payload": 1}
        )
        seen.update((device_id, r["topic"], bytes(r.get("payload") or b"")) for r in recent)
    suspect = {id(d) for d in suspects}
    return [d for d in docs if id(d) not in suspect or (d["device_id"], d["topic"], d["payload"]) not in seen]


def activity_by_device(docs):
    """What a batch's inbound messages say of each device: count, first and last seen, online."""
    per_device = OrderedDict()
    for doc in docs:
        if doc["direction"] != "in":
            continue
        entry = per_device.setdefault(
            doc["device_id"],
            {"count": 0, "first": doc["received_at"], "last": None, "online": True, "ids": []},
        )
        entry["ids"].append(doc["_id"].binary)
        entry["count"] += 1
        entry["last"] = doc["received_at"]
        if is_status_topic(doc["topic"]) and doc.get("text") in ("online", "offline"):
            entry["online"] = doc["text"] == "online"
    return per_device


def device_update(device_id, entry):
    """The upsert of one device for a batch.

    It is marked with a digest of the batch's message ids for that device and applies
    only to a device not yet marked with it, so a retried batch never counts twice.
    """
    marker = _batch_marker(entry["ids"])
    return UpdateOne(
        {"device_id": device_id, "last_ingest_id": {"$ne": marker}},
        {
            "$setOnInsert": {"created_at": entry["first"], "fw_version": None, "name": None},
            "$set": {"last_seen_at": entry["last"], "online": entry["online"], "last_ingest_id": marker},
            "$inc": {"message_count": entry["count"]},
        },
        upsert=True,
    )


def _batch_marker(binary_ids):
    """A 12-byte digest of a batch's message ids, stored as an ObjectId."""
    return ObjectId(hashlib.blake2b(b"".join(binary_ids), digest_size=12).digest())


def update_devices(stored, fetch=True):
    """Apply the batch's device upserts; return the devices' documents as they now are (if `fetch`)."""
    activity = activity_by_device(stored)
    if not activity:
        return []
    updates = [device_update(device_id, entry) for device_id, entry in activity.items()]
    collection = Device._get_collection()
    try:
        collection.with_options(write_concern=JOURNALED).bulk_write(updates, ordered=False)
    except BulkWriteError as exc:
        # A duplicate key here is the upsert of a device already marked with this batch.
        if any(e["code"] != DUPLICATE_KEY for e in exc.details["writeErrors"]):
            raise
    if not fetch:
        return []
    return list(collection.find({"device_id": {"$in": list(activity)}}))
