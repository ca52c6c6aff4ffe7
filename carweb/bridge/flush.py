"""Device documents written behind the stream, and recounted after a crash.

Acks wait for the messages, not for their devices: a device document costs one write
per device, which at thousands of devices is most of what the database can do, so the
bridge writes what changed in its book every FLUSH_SECONDS instead, and a device that
sent ten messages meanwhile costs one write. What a crash loses is recounted at start
from the messages stored after the checkpoint (`IngestState.flushed_through`), which
moves only once every device of a flush is written.
"""

import logging
import time

from bson import ObjectId
from pymongo import ReturnDocument, UpdateOne

from carweb.bridge.ingest import JOURNALED, load_devices
from carweb.models import Device, Message
from carweb.models.state import INGEST, IngestState

log = logging.getLogger(__name__)
# Devices per write: each costs SecantusDB about 0.8 ms, during which the message inserts
# slow down; small chunks with a pause after each keep those inserts quick.
FLUSH_CHUNK = 20
RECOVERY_FIELDS = {"payload": 0, "data": 0}


def flush_devices(book, pause=None):
    """Write the book's changed devices, then move the checkpoint; return how many were written.

    `pause(seconds)` is called after each chunk with the time the chunk took, so the
    caller can leave the database time for the messages in between.
    """
    states = book.dirty()
    if not states:
        return 0
    checkpoint = book.recorded_through
    for first in range(0, len(states), FLUSH_CHUNK):
        part = states[first : first + FLUSH_CHUNK]
        started = time.monotonic()
        places = reserve_places(sum(state.seen_changed for state in part))
        deleted = write_devices(part, places)
        for state in deleted:
            recount_deleted(book, state)
        book.flushed(part)
        if pause is not None:
            pause(time.monotonic() - started)
    if checkpoint is not None:
        state_collection().update_one({"_id": INGEST}, {"$max": {"flushed_through": checkpoint}}, upsert=True)
    return len(states)


def state_collection():
    """The `ingest_state` collection, journaled like every write the acks rest on."""
    return IngestState._get_collection().with_options(write_concern=JOURNALED)


def reserve_places(count):
    """Hand out `count` new places at the top of the device list; an iterator over them, lowest first."""
    if not count:
        return iter(())
    doc = state_collection().find_one_and_update(
        {"_id": INGEST}, {"$inc": {"seen_seq": count}}, upsert=True, return_document=ReturnDocument.AFTER
    )
    return iter(range(doc["seen_seq"] - count + 1, doc["seen_seq"] + 1))


def write_devices(states, places):
    """Upsert the devices' documents; return the states whose document had been deleted meanwhile."""
    updates = [UpdateOne({"device_id": s.device_id}, device_update(s, places), upsert=True) for s in states]
    result = Device._get_collection().with_options(write_concern=JOURNALED).bulk_write(updates, ordered=False)
    return [states[index] for index in result.upserted_ids if states[index].in_db]


def device_update(state, places):
    """The update of one device: counters only grow, so a repeated or late write changes nothing."""
    grow = {"last_seq": state.recorded_seq, "message_count": state.message_count}
    if state.last_seen_at is not None:
        grow["last_seen_at"] = state.last_seen_at
    if state.seen_changed:
        grow["seen_seq"] = next(places)
    update = {
        "$max": grow,
        "$setOnInsert": {"created_at": state.created_at, "name": None, "fw_version": None},
    }
    if state.online is not None:
        update["$set"] = {"online": state.online}
    return update


def recount_deleted(book, state):
    """A device deleted while it kept sending: count only the messages stored since."""
    remaining = list(
        Message._get_collection().find({"device_id": state.device_id}, {"direction": 1, "received_at": 1})
    )
    inbound = [doc["received_at"] for doc in remaining if doc.get("direction", "in") == "in"]
    counts = {"message_count": len(inbound), "created_at": min(inbound, default=state.created_at)}
    Device._get_collection().update_one({"device_id": state.device_id}, {"$set": counts})
    held = book.get(state.device_id)
    if held is not None:
        held.message_count, held.created_at = counts["message_count"], counts["created_at"]
    log.info("device %s was deleted and sent again: %d messages since", state.device_id, len(inbound))


def recover_unflushed(book):
    """Count the messages stored after the checkpoint that the book does not hold yet; how many."""
    state = IngestState._get_collection().find_one({"_id": INGEST}) or {}
    through = state.get("flushed_through")
    if through is None:
        # First start: nothing before now needs recounting.
        state_collection().update_one({"_id": INGEST}, {"$max": {"flushed_through": ObjectId()}}, upsert=True)
        return 0
    tail = list(Message._get_collection().find({"_id": {"$gt": through}}, RECOVERY_FIELDS, sort=[("_id", 1)]))
    tail = [doc for doc in tail if doc.get("seq") is not None]
    load_devices(book, [doc["device_id"] for doc in tail])
    uncounted = [doc for doc in tail if doc["seq"] > book.get(doc["device_id"]).recorded_seq]
    book.record(uncounted)
    for doc in tail:
        book.skip_to(doc["device_id"], doc["seq"])
    if uncounted:
        log.warning("recounted %d messages stored after the last device flush", len(uncounted))
    flush_devices(book)
    return len(uncounted)
