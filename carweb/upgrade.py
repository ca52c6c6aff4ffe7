"""Bring stored data up to this version at start, before the bridge runs (idempotent)."""

import contextlib
import logging

from pymongo import UpdateOne
from pymongo.errors import OperationFailure

from carweb.bridge.flush import reserve_places, state_collection
from carweb.models import Device, Message, ensure_indexes
from carweb.models.state import INGEST, IngestState

log = logging.getLogger(__name__)
# Indexes of earlier versions that nothing reads any more (each costs every insert).
RETIRED_INDEXES = ((Message, "device_history"), (Device, "last_seen_at_-1"))


def prepare_database():
    """Upgrade what earlier versions stored, then create the indexes (some need the upgrade)."""
    number_history()
    ensure_indexes()


def number_history():
    """Number the messages stored before history numbers existed, device by device; how many."""
    state = IngestState._get_collection().find_one({"_id": INGEST}) or {}
    if state.get("history_numbered"):
        return 0
    devices = Device._get_collection().find({}, {"device_id": 1, "last_seen_at": 1, "seen_seq": 1})
    devices = sorted(devices, key=lambda d: (d.get("last_seen_at") is None, d.get("last_seen_at") or 0))
    numbered = sum(number_device(device["device_id"]) for device in devices)
    unplaced = [device for device in devices if device.get("seen_seq") is None]
    places = reserve_places(len(unplaced))
    for device in unplaced:
        Device._get_collection().update_one({"_id": device["_id"]}, {"$set": {"seen_seq": next(places)}})
    for document, name in RETIRED_INDEXES:
        # Not there on a new database, or dropped by an earlier start.
        with contextlib.suppress(OperationFailure):
            document._get_collection().drop_index(name)
    state_collection().update_one({"_id": INGEST}, {"$set": {"history_numbered": True}}, upsert=True)
    if numbered:
        log.warning("numbered %d messages of %d devices stored by an earlier version", numbered, len(devices))
    return numbered


def number_device(device_id):
    """Number one device's unnumbered messages after its numbered ones, oldest first; how many.

    Reads by the index of earlier versions, `device_history`, which is dropped only after.
    """
    collection = Message._get_collection()
    messages = list(collection.find({"device_id": device_id}, {"seq": 1, "received_at": 1, "direction": 1}))
    top = max((m["seq"] for m in messages if m.get("seq") is not None), default=0)
    unnumbered = sorted(
        (m for m in messages if m.get("seq") is None), key=lambda m: (m["received_at"], m["_id"])
    )
    for first in range(0, len(unnumbered), 1000):
        part = unnumbered[first : first + 1000]
        updates = [
            UpdateOne({"_id": m["_id"]}, {"$set": {"seq": top + first + n + 1}}) for n, m in enumerate(part)
        ]
        collection.bulk_write(updates, ordered=False)
    inbound = sum(m.get("direction", "in") == "in" for m in messages)
    counts = {"last_seq": top + len(unnumbered), "message_count": inbound}
    Device._get_collection().update_one({"device_id": device_id}, {"$set": counts})
    return len(unnumbered)
