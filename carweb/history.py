"""A device's message history, newest first, by keyset pages that do bounded work.

Sorting every message of a device to find its newest 50 costs time in proportion to the
device's history on some servers, so each page query also bounds `received_at` to a
window estimated from the device's own message rate, widened only while the page is
not full.
"""

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bson import ObjectId
from bson.errors import InvalidId

from carweb.bridge.topics import topic_filter_regex
from carweb.models import Message

MIN_WINDOW = timedelta(minutes=1)
ONE_MS = timedelta(milliseconds=1)
WIDEN_FACTOR = 4
SORT = [("received_at", -1), ("_id", -1)]
_CURSOR = re.compile(r"^(\d{1,15})_([0-9a-f]{24})$")


@dataclass
class HistoryQuery:
    """What the operator asked for: a page before a cursor, a topic filter, a time range."""

    before: tuple | None = None
    topic: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50


@dataclass
class HistoryPage:
    """One page of messages and the cursor of the next older page (None at the end)."""

    messages: list = field(default_factory=list)
    older: str | None = None
    queries: int = 0


def encode_cursor(doc):
    """The cursor pointing just below this message."""
    millis = int(doc["received_at"].timestamp() * 1000)
    return f"{millis}_{doc['_id']}"


def decode_cursor(text):
    """Parse a cursor into (received_at, ObjectId); raise ValueError when malformed."""
    match = _CURSOR.match(text or "")
    if not match:
        raise ValueError("bad cursor")
    try:
        oid = ObjectId(match.group(2))
    except InvalidId as exc:
        raise ValueError("bad cursor") from exc
    return datetime.fromtimestamp(int(match.group(1)) / 1000, UTC), oid


def cursor_at(moment):
    """A cursor just above every message stored up to `moment` (used when a page is empty)."""
    return encode_cursor({"received_at": moment, "_id": "f" * 24})  # the largest _id there is


def messages_after(device_id, cursor, limit):
    """Messages stored after `cursor`, oldest first, at most `limit`; and whether more exist.

    Pages call this when they (re)subscribe, to catch up on what was stored since they
    were rendered or while they were disconnected.
    """
    at, oid = decode_cursor(cursor)
    collection = Message._get_collection()
    # Messages stored in the cursor's own millisecond come after it by _id.
    ties = {"device_id": device_id, "received_at": at, "_id": {"$gt": oid}}
    newer = list(collection.find(ties, sort=[("_id", 1)], limit=limit + 1))
    if len(newer) <= limit:
        later = {"device_id": device_id, "received_at": {"$gt": at}}
        sort = [("received_at", 1), ("_id", 1)]
        newer += collection.find(later, sort=sort, limit=limit + 1 - len(newer))
    return newer[:limit], len(newer) > limit


def estimated_window(device, limit):
    """How far back one page probably reaches, from the device's average rate."""
    rate = device.messages_per_second()
    if not rate:
        return None
    return max(timedelta(seconds=2 * limit / rate), MIN_WINDOW)


def message_page(device, query):
    """Return one page of a device's messages, newest first, with the older-page cursor."""
    matches = re.compile(topic_filter_regex(query.topic)).match if query.topic else None
    wanted = query.limit + 1
    page = HistoryPage()
    top, inclusive = _page_top(query)
    if query.before and not inclusive:
        at, oid = query.before
        ties = {"device_id": device.device_id, "received_at": at, "_id": {"$lt": oid}}
        page.messages.extend(_fetch(ties, wanted, matches))
        page.queries += 1
    floor = query.since or _start_of(device)
    anchor = top or device.last_seen_at
    window = estimated_window(device, query.limit)
    while len(page.messages) < wanted:
        lower = _whole_ms(anchor - window) if (window and anchor) else None
        exhausted = lower is None or (floor is not None and lower <= floor)
        band = _band(device.device_id, floor if exhausted else lower, top, inclusive)
        page.messages.extend(_fetch(band, wanted - len(page.messages), matches))
        page.queries += 1
        if exhausted:
            break
        top, inclusive, window = lower, False, window * WIDEN_FACTOR
    if len(page.messages) > query.limit:
        page.messages = page.messages[: query.limit]
        page.older = encode_cursor(page.messages[-1])
    return page


def _page_top(query):
    """The newest time a page may show, and whether that time itself is included."""
    if query.before:
        at = query.before[0]
        if query.until and query.until < at:
            return query.until, True
        return at, False
    return query.until, True


def _whole_ms(moment):
    """Round down to the millisecond, the precision of BSON dates, so bands tile exactly."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _start_of(device):
    """The earliest time the device can have messages (slightly before its record)."""
    return device.created_at - MIN_WINDOW if device.created_at else None


def _band(device_id, lower, top, inclusive):
    """Messages of a device in [lower, top): only equality plus one range, which any server indexes."""
    bounds = {}
    if lower is not None:
        # "> lower - 1 ms" is ">= lower" for BSON dates (millisecond precision); written this
        # way because SecantusDB treats $gte on a descending index key as $gt.
        bounds["$gt"] = lower - ONE_MS
    if top is not None:
        bounds["$lte" if inclusive else "$lt"] = top
    return {"device_id": device_id, "received_at": bounds} if bounds else {"device_id": device_id}


def _fetch(condition, limit, matches):
    """Up to `limit` messages matching `condition`, newest first, filtered by topic in Python.

    The topic filter is applied here rather than in the query so the query keeps the shape
    every server answers from the history index; only _id and topic travel for the scan.
    """
    collection = Message._get_collection()
    if matches is None:
        return list(collection.find(condition, sort=SORT, limit=limit))
    heads = collection.find(condition, {"topic": 1}, sort=SORT)
    ids = [head["_id"] for head in heads if matches(head["topic"])][:limit]
    if not ids:
        return []
    found = {doc["_id"]: doc for doc in collection.find({"_id": {"$in": ids}})}
    return [found[oid] for oid in ids if oid in found]
