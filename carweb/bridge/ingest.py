"""Batch writer: turns MQTT messages into documents and stores them with one bulk write."""

import logging
from collections import OrderedDict
from dataclasses import dataclass, field

from bson import ObjectId
from bson.errors import InvalidDocument
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, DocumentTooLarge, DuplicateKeyError, WriteError
from pymongo.write_concern import WriteConcern

from carweb import metrics
from carweb.bridge.topics import TopicError, device_id_of, direction_of, is_status_topic
from carweb.models import Device, Message
from carweb.payloads import decode_payload

log = logging.getLogger(__name__)
DUPLICATE_KEY = 11000
# The broker ack depends on this write, so it must be on disk whatever the URI says.
JOURNALED = WriteConcern(j=True)


@dataclass
class IngestResult:
    """What one batch write stored, per device, for acking and live updates."""

    stored: list = field(default_factory=list)
    devices: list = field(default_factory=list)


def message_document(topic, payload, qos, retain, received_at, max_payload):
    """Build the document stored for one MQTT message; raise TopicError for an unusable topic."""
    device_id = device_id_of(topic)
    doc = {
        "_id": ObjectId(),
        "device_id": device_id,
        "topic": topic,
        "qos": qos,
        "retain": bool(retain),
        "direction": direction_of(topic),
        "received_at": received_at,
    }
    doc.update(decode_payload(payload, max_payload))
    return doc


def build_documents(arrivals, max_payload):
    """Turn (paho message, arrival time) pairs into documents, counting the dropped ones."""
    docs = []
    for msg, received_at in arrivals:
        try:
            doc = message_document(msg.topic, msg.payload, msg.qos, msg.retain, received_at, max_payload)
        except (TopicError, UnicodeDecodeError) as exc:
            reason = str(exc) if isinstance(exc, TopicError) else "topic not UTF-8"
            metrics.dropped.labels(reason=reason).inc()
            log.warning("dropped message on %r: %s", getattr(msg, "_topic", b"")[:200], reason)
            continue
        if doc["truncated"]:
            metrics.truncated.inc()
            log.warning("payload of %d bytes on %s stored truncated", doc["size"], doc["topic"])
        docs.append(doc)
    return docs


def insert_messages(docs):
    """Insert documents unordered; return those stored (an already stored _id counts)."""
    if not docs:
        return []
    collection = Message._get_collection().with_options(write_concern=JOURNALED)
    try:
        collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        rejected = {e["index"] for e in exc.details["writeErrors"] if e["code"] != DUPLICATE_KEY}
        return _drop_rejected(docs, rejected, "rejected by database")
    except (InvalidDocument, DocumentTooLarge):
        return _insert_each(collection, docs)
    return docs


def _insert_each(collection, docs):
    """Insert one by one after a batch the driver refused, dropping what cannot be encoded."""
    rejected = set()
    for index, doc in enumerate(docs):
        try:
            collection.insert_one(doc)
        except DuplicateKeyError:
            pass
        except (InvalidDocument, DocumentTooLarge, WriteError):
            rejected.add(index)
    return _drop_rejected(docs, rejected, "invalid document")


def _drop_rejected(docs, rejected, reason):
    """Count and log rejected documents; return the others."""
    for index in sorted(rejected):
        metrics.dropped.labels(reason=reason).inc()
        log.error("%s: message on %s not stored", reason, docs[index]["topic"])
    return [doc for index, doc in enumerate(docs) if index not in rejected]


def device_updates(docs):
    """Bulk upserts for the devices of a batch: counters, last seen and online state."""
    per_device = OrderedDict()
    for doc in docs:
        if doc["direction"] != "in":
            continue
        entry = per_device.setdefault(
            doc["device_id"], {"count": 0, "first": doc["received_at"], "last": None, "online": True}
        )
        entry["count"] += 1
        entry["last"] = doc["received_at"]
        if is_status_topic(doc["topic"]) and doc.get("text") in ("online", "offline"):
            entry["online"] = doc["text"] == "online"
    return [
        UpdateOne(
            {"device_id": device_id},
            {
                "$setOnInsert": {"created_at": entry["first"], "fw_version": None, "name": None},
                "$set": {"last_seen_at": entry["last"], "online": entry["online"]},
                "$inc": {"message_count": entry["count"]},
            },
            upsert=True,
        )
        for device_id, entry in per_device.items()
    ]


def ingest_batch(docs):
    """Store a batch of message documents and update their devices; return what was stored."""
    stored = insert_messages(docs)
    updates = device_updates(stored)
    if updates:
        devices = Device._get_collection().with_options(write_concern=JOURNALED)
        devices.bulk_write(updates, ordered=False)
    metrics.stored.inc(len(stored))
    metrics.batches.inc()
    touched = list(OrderedDict.fromkeys(d["device_id"] for d in stored))
    found = Device._get_collection().find({"device_id": {"$in": touched}}) if touched else []
    return IngestResult(stored=stored, devices=list(found))
