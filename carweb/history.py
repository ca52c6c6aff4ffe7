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


def estimated_window(device, limit):
    """How far back one page probably reaches, from the device's average rate."""
    rate = device.messages_per_second()
    if not rate:
        return None
    return max(timedelta(seconds=2 * limit / rate), MIN_WINDOW)


def message_page(device, query):
    """Return one page of a device's messages, newest first, with the older-page cursor."""
    base = {"device_id": device.device_id}
    if query.topic:
        base["topic"] = {"$regex": topic_filter_regex(query.topic)}
    upper = _upper_bound(query)
    if upper:
        base.update(upper)
    floor = query.since or _start_of(device)
    anchor = query.before[0] if query.before else (query.until or device.last_seen_at)
    window = estimated_window(device, query.limit)
    wanted = query.limit + 1
    page = HistoryPage()
    collection = Message._get_collection()
    band_top = None
    while True:
        lower = anchor - window if (window and anchor) else None
        exhausted = lower is None or (floor is not None and lower <= floor)
        band = _band(base, lower if not exhausted else floor, band_top)
        docs = list(collection.find(band, sort=SORT, limit=wanted - len(page.messages)))
        page.queries += 1
        page.messages.extend(docs)
        if len(page.messages) >= wanted or exhausted:
            break
        band_top, window = lower, window * WIDEN_FACTOR
    if len(page.messages) > query.limit:
        page.messages = page.messages[: query.limit]
        page.older = encode_cursor(page.messages[-1])
    return page


def _start_of(device):
    """The earliest time the device can have messages (slightly before its record)."""
    return device.created_at - MIN_WINDOW if device.created_at else None


def _upper_bound(query):
    """Conditions for the top of the page: the keyset cursor and/or the `until` time."""
    if query.before:
        at, oid = query.before
        if query.until and query.until < at:
            return {"received_at": {"$lte": query.until}}
        return {"received_at": {"$lte": at}, "$or": [{"received_at": {"$lt": at}}, {"_id": {"$lt": oid}}]}
    if query.until:
        return {"received_at": {"$lte": query.until}}
    return None


def _band(base, lower, band_top):
    """The query for one time band: [lower, band_top) inside the page's own bounds."""
    band = dict(base)
    bounds = dict(band.get("received_at", {}))
    if lower is not None:
        bounds["$gte"] = lower
    if band_top is not None:
        bounds["$lt"] = band_top
    if bounds:
        band["received_at"] = bounds
    return band
