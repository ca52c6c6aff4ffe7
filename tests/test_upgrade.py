"""A database of an earlier version: its messages are numbered and its devices placed at start."""

from datetime import UTC, datetime, timedelta

from bson import ObjectId

from carweb.history import HistoryQuery, message_page
from carweb.models import Device, Message
from carweb.models.state import INGEST, IngestState
from carweb.upgrade import prepare_database

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def legacy_database():
    """What carweb stored before message numbers: no seq, no places, the old history index."""
    messages = Message._get_collection()
    for name in ("device_seq", "device_msg_id"):
        messages.drop_index(name)
    messages.create_index([("device_id", 1), ("received_at", -1), ("_id", -1)], name="device_history")
    IngestState._get_collection().delete_many({})
    times = [T0 + timedelta(seconds=n // 3) for n in range(30)]  # three per second: ties by _id
    docs = [
        {
            "_id": ObjectId(),
            "device_id": "old",
            "topic": "old/t",
            "text": str(n),
            "received_at": at,
            "direction": "in",
        }
        for n, at in enumerate(times)
    ]
    docs.append(
        {
            "_id": ObjectId(),
            "device_id": "old",
            "topic": "old/firmware/update",
            "received_at": times[-1],
            "direction": "out",
        }
    )
    docs.append(
        {"_id": ObjectId(), "device_id": "other", "topic": "other/t", "received_at": T0, "direction": "in"}
    )
    messages.insert_many(list(reversed(docs)))
    Device._get_collection().insert_many(
        [
            {"device_id": "old", "message_count": 30, "last_seen_at": times[-1], "created_at": T0},
            {"device_id": "other", "message_count": 1, "last_seen_at": T0, "created_at": T0},
        ]
    )
    return docs


def test_messages_of_an_earlier_version_are_numbered_in_arrival_order(app):
    """1, 2, 3... by time then _id; device counters and places follow; the old index goes."""
    docs = legacy_database()
    prepare_database()
    by_id = {m["_id"]: m["seq"] for m in Message._get_collection().find({"device_id": "old"})}
    assert [by_id[d["_id"]] for d in docs[:31]] == list(range(1, 32))
    old, other = Device.objects.get(device_id="old"), Device.objects.get(device_id="other")
    assert (old.last_seq, old.message_count) == (31, 30) and old.seen_seq > other.seen_seq
    indexes = Message._get_collection().index_information()
    assert "device_history" not in indexes and indexes["device_seq"]["unique"]
    page = message_page(old, HistoryQuery(limit=10))
    assert [m["seq"] for m in page.messages] == list(range(31, 21, -1))


def test_preparing_again_changes_nothing(app):
    """The upgrade runs once; later starts find it done."""
    legacy_database()
    prepare_database()
    before = list(Message._get_collection().find({}, {"seq": 1}))
    prepare_database()
    assert list(Message._get_collection().find({}, {"seq": 1})) == before
    assert IngestState._get_collection().find_one({"_id": INGEST})["history_numbered"] is True
