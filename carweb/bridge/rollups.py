"""Per-minute rollups of each device's numbers, kept as the bridge stores messages, written behind the stream.

Each stored inbound message is folded into its device's minute in memory (`RollupBook`);
every flush writes the changed minutes as `$inc`/`$min`/`$max` upserts, so a device that
sent a hundred messages since costs one small write, and any number of bridges can add
to the same minute. Each minute keeps, per bridge process, the newest message `_id` it
folded in (`w.<process>`): an update whose messages are already there matches nothing,
its upsert clashes with the unique key and is skipped, so a retried flush or a recovery
adds nothing twice. Closed hours and days are folded into one document each afterwards
(`folds.py`). What a crash loses in memory is added again at the next start from the
messages stored after the process's last flush (`recover_rollups`).
"""

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from carweb import metrics
from carweb.bridge.ingest import DUPLICATE_KEY, JOURNALED
from carweb.models import Message, Rollup
from carweb.models.state import IngestState
from carweb.telemetry.series import (
    aware,
    floor_time,
    from_seconds,
    name_below,
    numeric_fields,
    series_key,
)

log = logging.getLogger(__name__)
MINUTE, HOUR, DAY = 60, 3600, 86400
# An hour (a day) is folded this long after it ends: its last minutes are written by then.
FOLD_GRACE = timedelta(seconds=90)
WRITE_CHUNK = 50  # minutes per bulk write, with a pause after each like the device flush
# A minute keeps at most this many series: a device that names a new field in every
# message grows its documents by this much at most, not by a field per message.
MAX_SERIES = 100
COMMON_SERIES = 32  # a device's minute with more series than this is watched for the cap
DENSE = 120  # a device-minute with this many messages waiting is written before it ends
WRITE_GRACE = timedelta(seconds=2)  # a minute is written this long after it ends (batches in flight)
# Recovery reads messages stored after the last flush of the process that stopped, up
# to this long after it last wrote (it wrote every second while it could store anything).
RECOVERY_WINDOW = timedelta(minutes=5)
TAIL_FIELDS = {"device_id": 1, "topic": 1, "received_at": 1, "data": 1, "kind": 1, "seq": 1, "direction": 1}


def process_of(object_id):
    """The process part of an ObjectId: the bridge process that received the message."""
    return object_id.binary[4:9].hex()


@dataclass(slots=True)
class MinuteDelta:
    """What one device's messages added to one minute since the last flush."""

    device_id: str
    start: datetime
    count: int = 0
    lo_seq: int = 0
    hi_seq: int = 0
    first_id: ObjectId = None
    last_id: ObjectId = None
    # series key -> [count, sum, min, max, newest time, newest value, name]: one list per
    # series, the name shared with every device's (thousands of these wait for a flush)
    stats: dict = field(default_factory=dict)
    fresh: bool = False  # this process has not written the minute yet: insert it whole

    def add(self, doc, wide):
        """Fold one stored inbound message in; `wide` holds the series of minutes that have many (the cap).

        Plain lists, no calls per value: this runs on every message in the bridge's
        finisher, before the acks.
        """
        if self.count == 0:
            self.first_id, self.lo_seq = doc["_id"], doc["seq"]
        self.count += 1
        self.last_id, self.hi_seq = doc["_id"], doc["seq"]
        if doc.get("kind") != "json" or "data" not in doc:
            return
        below, at, by_key = doc["topic"].partition("/")[2], doc["received_at"], self.stats
        for path, value in numeric_fields(doc["data"]):
            key, name = series_of(below, path)
            stats = by_key.get(key)
            if stats is None:
                if not self._room_for(key, wide):
                    metrics.series_refused.inc()
                    continue
                by_key[key] = [1, value, value, value, at, value, name]
                continue
            stats[0] += 1
            stats[1] += value
            if value < stats[2]:
                stats[2] = value
            elif value > stats[3]:
                stats[3] = value
            stats[4], stats[5] = at, value

    def _room_for(self, key, wide):
        """Whether the minute may take one more series (MAX_SERIES).

        A minute's series are remembered across flushes only once a delta holds more
        than COMMON_SERIES of them, so a car's few series cost no set per minute.
        """
        slot = (self.device_id, self.start)
        held = wide.get(slot)
        if held is None:
            if len(self.stats) < COMMON_SERIES:
                return True
            held = wide[slot] = set(self.stats)
        if key in held or len(held) < MAX_SERIES:
            held.add(key)
            return True
        return False

    def document(self, process):
        """The minute's whole document, when this delta is all it holds."""
        doc = {"device_id": self.device_id, "level": "m", "start": self.start, "c": self.count}
        doc.update(lo_seq=self.lo_seq, hi_seq=self.hi_seq, w={process: self.last_id}, f={}, names={}, last={})
        for key, (count, total, lowest, highest, at, value, name) in self.stats.items():
            doc["f"][key] = {"n": count, "s": total, "lo": lowest, "hi": highest}
            doc["names"][key], doc["last"][key] = name, {"at": at, "v": value}
        return doc

    def update(self, process):
        """The upsert that adds this delta to its minute's document, and notes its newest message id."""
        query = {"device_id": self.device_id, "level": "m", "start": self.start}
        inc, low, high = {"c": self.count}, {"lo_seq": self.lo_seq}, {"hi_seq": self.hi_seq}
        high[f"w.{process}"] = self.last_id
        names = {}
        for key, (count, total, lowest, highest, at, value, name) in self.stats.items():
            inc[f"f.{key}.n"], inc[f"f.{key}.s"] = count, total
            low[f"f.{key}.lo"], high[f"f.{key}.hi"] = lowest, highest
            high[f"last.{key}"] = {"at": at, "v": value}
            names[f"names.{key}"] = name
        update = {"$inc": inc, "$min": low, "$max": high}
        if names:
            update["$set"] = names
        return UpdateOne(query, update, upsert=True)


@lru_cache(maxsize=4096)
def series_of(below, path):
    """(key, name) of the series at `path` on a topic `below` the device id: every car of a fleet shares them."""
    name = name_below(below, path)
    return series_key(name), name


def minute_of(moment):
    """The minute (since 1970) a message was received in; naive times are UTC, as pymongo returns them."""
    return int(aware(moment).timestamp()) // MINUTE


class RollupBook:
    """The minutes of this bridge process not yet written, and the hours and days to fold."""

    def __init__(self, process=None):
        self.process = process or process_of(ObjectId())
        self.open = {}  # (device id, minute since 1970) -> MinuteDelta
        self.writing = None  # the deltas a flush took, until they are written
        self.wide = {}  # (device id, minute start) -> series keys, of minutes with many (the cap)
        self.minutes = set()  # (device id, minute start) this process has written, lately
        self.hours, self.days = set(), set()
        self.through = self.writing_through = self.writing_from = None
        self.saved = None  # the progress last saved: (through, from)

    def record(self, docs, through=None):
        """Fold stored messages in, each device's oldest first; `through` as for `DeviceBook.record`."""
        deltas, wide = self.open, self.wide
        for doc in docs:
            if doc.get("direction", "in") != "in" or doc.get("seq") is None:
                continue
            slot = (doc["device_id"], minute_of(doc["received_at"]))
            delta = deltas.get(slot)
            if delta is None:
                delta = deltas[slot] = MinuteDelta(slot[0], from_seconds(slot[1] * MINUTE))
            delta.add(doc, wide)
        if through is not None:
            self.through = through

    def take(self, now=None):
        """The deltas to write, and whether a failed flush took them already (some may be written).

        A minute is written once it has ended, so a car that speaks every few seconds
        costs one insert a minute, not an upsert a flush; a busy device's (DENSE
        messages or more) is written as it goes, so charts never read many messages
        that are in no minute yet. The ones kept back are where a recovery starts.
        """
        if self.writing is not None:
            return self.writing, True
        ended = minute_of((now or datetime.now(UTC)) - WRITE_GRACE)  # minutes before it have ended
        ready, kept = [], {}
        for slot, delta in self.open.items():
            if slot[1] < ended or delta.count >= DENSE:
                delta.fresh = (delta.device_id, delta.start) not in self.minutes
                ready.append(delta)
            else:
                kept[slot] = delta
        self.writing, self.open = ready, kept
        self.writing_through = self.through
        self.writing_from = min((delta.first_id for delta in kept.values()), default=None)
        return self.writing, False

    def written(self, now):
        """The taken deltas are in the database: note their minutes and hours, forget old ones."""
        for delta in self.writing:
            self.hours.add((delta.device_id, floor_time(delta.start, HOUR)))
            self.minutes.add((delta.device_id, delta.start))
        self.writing = None
        old = now - FOLD_GRACE - timedelta(seconds=MINUTE)
        self.wide = {slot: keys for slot, keys in self.wide.items() if slot[1] >= old}
        self.minutes = {slot for slot in self.minutes if slot[1] >= old}


def rollups_collection():
    """The `telemetry` collection, with the server's default write concern.

    Nothing is acked on these writes: what they hold is durable once the journaled
    progress mark after them is (the journal is one sequence), and until then a
    restart adds those messages again.
    """
    return Rollup._get_collection()


def flush_rollups(book, client_id, pause=None, now=None):
    """Write the minutes that have ended (and busy ones), then note how far this process's messages are written; how many."""
    deltas, retried = book.take(now)
    collection = rollups_collection()
    for first in range(0, len(deltas), WRITE_CHUNK):
        write_deltas(collection, deltas[first : first + WRITE_CHUNK], book.process, pause, checked=retried)
    book.written(datetime.now(UTC))
    progress = (book.writing_through, book.writing_from)
    if book.writing_through is not None and progress != book.saved:
        save_progress(client_id, book.process, *progress)
        book.saved = progress
    return len(deltas)


def write_deltas(collection, deltas, process, pause=None, checked=False):
    """Write deltas: a minute this process has not written yet is inserted whole, others upserted.

    An insert costs SecantusDB a twentieth of an upsert, and a device that speaks every
    few seconds starts a new minute at almost every flush. A minute that exists after all
    (another bridge, an earlier process) refuses the insert and is upserted instead,
    checked. `checked` checks every delta first (a read per minute), as a flush retried
    after a failed write must: some of its deltas may be in the database.
    """
    started = datetime.now(UTC)
    if checked:
        rest = [delta for delta in deltas if not _holds(collection, delta, process)]
    else:
        clashed = _insert(collection, [delta for delta in deltas if delta.fresh], process)
        rest = [delta for delta in deltas if not delta.fresh]
        rest += [delta for delta in clashed if not _holds(collection, delta, process)]
    if rest:
        _upsert(collection, rest, process)
    if pause is not None:
        pause((datetime.now(UTC) - started).total_seconds())


def _insert(collection, deltas, process):
    """Insert new minutes' documents; the deltas whose minute existed already."""
    try:
        if deltas:
            collection.insert_many([delta.document(process) for delta in deltas], ordered=False)
    except BulkWriteError as exc:
        return _refused(deltas, exc)
    return []


def _upsert(collection, deltas, process):
    """Add deltas to their minutes; a minute two writers create at once is added to again."""
    try:
        collection.bulk_write([delta.update(process) for delta in deltas], ordered=False)
    except BulkWriteError as exc:
        clashed = _refused(deltas, exc)  # another bridge made the minute's document at the same moment
        if clashed:
            collection.bulk_write([delta.update(process) for delta in clashed], ordered=False)


def _refused(deltas, exc):
    """The deltas a bulk write refused for a duplicate key; others refused are logged (a minute too large)."""
    clashed = []
    for error in exc.details["writeErrors"]:
        delta = deltas[error["index"]]
        if error.get("code") == DUPLICATE_KEY:
            clashed.append(delta)
        else:
            log.error("rollup of %s at %s not written: %s", delta.device_id, delta.start, error.get("errmsg"))
    return clashed


def _holds(collection, delta, process):
    """Whether the delta's minute already holds its messages (its newest id from `process` is at least the delta's first)."""
    mark = _mark(collection, delta.device_id, delta.start, process)
    return mark is not None and mark >= delta.first_id


def _mark(collection, device_id, start, process):
    """The newest message `_id` from `process` that a device's minute holds, or None."""
    query = {"device_id": device_id, "level": "m", "start": start}
    found = collection.find_one(query, {f"w.{process}": 1}) or {}
    return (found.get("w") or {}).get(process)


def progress_id(client_id):
    """The `ingest_state` document that says how far a bridge's rollups are written."""
    return f"telemetry:{client_id}"


def save_progress(client_id, process, through, start=None):
    """Every message of `process` up to `through` is in its minutes' rollups, except from `start` on (minutes kept back)."""
    IngestState._get_collection().with_options(write_concern=JOURNALED).update_one(
        {"_id": progress_id(client_id)},
        {"$set": {"process": process, "through": through, "from": start, "updated_at": datetime.now(UTC)}},
        upsert=True,
    )


def recover_rollups(book, client_id):
    """Add the messages the previous process of this bridge stored but had not rolled up; how many."""
    state = IngestState._get_collection().find_one({"_id": progress_id(client_id)})
    if not state or state.get("process") in (None, book.process):
        return 0
    old = state["process"]
    until = ObjectId.from_datetime(state["updated_at"] + RECOVERY_WINDOW)
    after = {"$gte": state["from"]} if state.get("from") else {"$gt": state["through"]}
    query = {"_id": {**after, "$lt": until}}
    found = Message._get_collection().find(query, TAIL_FIELDS, sort=[("_id", 1)])
    tail = [doc for doc in found if process_of(doc["_id"]) == old]
    lost = RollupBook(old)
    lost.record(_not_yet_folded(tail, old))
    deltas, _ = lost.take(now=datetime.now(UTC) + timedelta(hours=1))  # every minute, ended or not
    for first in range(0, len(deltas), WRITE_CHUNK):
        write_deltas(rollups_collection(), deltas[first : first + WRITE_CHUNK], old)
    book.hours.update((d.device_id, floor_time(d.start, HOUR)) for d in deltas)
    if tail:
        log.warning("added %d messages of the previous bridge process to the rollups", len(tail))
    save_progress(client_id, book.process, tail[-1]["_id"] if tail else state["through"])
    return len(tail)


def _not_yet_folded(tail, process):
    """The messages of `tail` above what their minutes already hold from `process`."""
    collection = rollups_collection()
    slot_of = {doc["_id"]: (doc["device_id"], floor_time(doc["received_at"], MINUTE)) for doc in tail}
    marks = {slot: _mark(collection, *slot, process) for slot in set(slot_of.values())}
    return [doc for doc in tail if (mark := marks[slot_of[doc["_id"]]]) is None or doc["_id"] > mark]
