"""A device's message history, newest first, by pages that each read a bounded number of documents.

Every message has a number in its device's history (`seq`: 1, 2, 3... in arrival order,
given by the bridge), so the newest fifty are the numbers just below the newest, and any
page is a range of numbers: the same exact, bounded index range on every MongoDB-like
server, whatever the device's history looks like in time. Gaps (a redelivery that took
a number, a message nothing could store) only make a range hold fewer documents.

A filter (topic, time) reads at most PAGE_READS pages' worth of documents per page; when
fewer than a page match within them, the page says how far back it looked and continues
from there.
"""

import re
from dataclasses import dataclass, field
from datetime import timedelta

from carweb.bridge.ingest import highest_seq
from carweb.bridge.topics import topic_filter_regex
from carweb.models import Message
from carweb.ranges import walk_down

# Pages' worth of documents one request may read: a filter that matches little looks
# through this many, then the page says how far it looked (each costs about 45 µs on
# SecantusDB, so three pages keep a page that found nothing near 20 ms).
PAGE_READS = 3
GAP_WIDENING = 8
SCAN_FIELDS = {"seq": 1, "topic": 1, "received_at": 1}
TIME_FIELDS = {"seq": 1, "received_at": 1}
ASCENDING, DESCENDING = [("seq", 1)], [("seq", -1)]


@dataclass
class HistoryQuery:
    """What the operator asked for: a page below a message number, a topic filter, a time range."""

    before: int | None = None
    topic: str | None = None
    since: object = None
    until: object = None
    limit: int = 50


@dataclass
class HistoryPage:
    """One page of messages, the cursor of the next older page, and how far a filter looked."""

    messages: list = field(default_factory=list)
    older: str | None = None
    # Set when the read limit ended the search before a page was full: continue below it.
    searched_to: str | None = None
    searched_to_time: object = None
    newest: int = 0  # the device's newest message number when the page was read
    reads: int = 0
    queries: int = 0

    @property
    def live_after(self):
        """The cursor live updates of this page continue from: its newest message, else the device's."""
        return encode_cursor(self.messages[0]) if self.messages else str(self.newest)


def encode_cursor(doc):
    """The cursor of the page below this message: its number."""
    return str(doc["seq"])


def decode_cursor(text):
    """The message number a cursor names; ValueError when it is not one."""
    if not isinstance(text, str) or not (text.isascii() and text.isdigit()) or not 0 < len(text) <= 18:
        raise ValueError("bad cursor")
    return int(text)


def newest_seq(device, known=0):
    """The number of the device's newest stored message, at least `known`.

    The device's document lags the stream (the bridge writes it behind), so the search
    starts from the higher of its `last_seq` and what the caller knows to be stored.
    """
    start = max(device.last_seq or 0, known)
    return highest_seq(Message._get_collection(), device.device_id, start)


def message_page(device, query, known_seq=0):
    """Return one page of a device's messages, newest first, with the cursor of the older page.

    `known_seq` is a number the caller knows is stored (the bridge's book, in its process).
    """
    page = HistoryPage()
    reader = _Reader(device.device_id, page)
    top = page.newest = newest_seq(device, known_seq)
    page.queries += 1
    if query.before is not None:
        top = min(top, query.before - 1)
    if query.until is not None:
        top, newest_time = seq_at_or_before(reader, query.until, top)
        if query.since is not None and (newest_time is None or newest_time < query.since):
            return page  # the newest message up to `until` is older than `since`: none in range
    # `until` only lowers the top; a topic or `since` needs every number looked at.
    filtered = query.topic is not None or query.since is not None
    fields = SCAN_FIELDS if filtered else None
    keep, stop = _filters(query) if filtered else (None, None)
    found, lowest, _ = walk_down(
        lambda low, high: reader.range(low, high, fields),
        top,
        query.limit + 1,
        query.limit * PAGE_READS,
        keep,
        stop,
    )
    if filtered:
        found = reader.whole(found[: query.limit + 1])
    page.messages = found[: query.limit]
    if len(found) > query.limit:
        page.older = encode_cursor(page.messages[-1])
    elif lowest > 0:
        page.searched_to = str(lowest + 1)
        page.searched_to_time = reader.lowest_time
    return page


def _filters(query):
    """`keep(doc)` for the documents a filter wants, `stop(doc)` once nothing older can match."""
    matches = re.compile(topic_filter_regex(query.topic)).match if query.topic else None
    since, until = query.since, query.until

    def keep(doc):
        if matches is not None and not matches(doc["topic"]):
            return False
        if since is not None and doc["received_at"] < since:
            return False
        return until is None or doc["received_at"] <= until

    def stop(doc):
        return since is not None and doc["received_at"] < since

    return keep, stop


class _Reader:
    """Range reads of one device's messages, counted into the page."""

    def __init__(self, device_id, page):
        self.device_id = device_id
        self.page = page
        self.lowest_time = None
        self.collection = Message._get_collection()

    def range(self, low, high, fields=None, sort=DESCENDING):
        """Messages numbered in (low, high], newest first."""
        query = {"device_id": self.device_id, "seq": {"$gt": low, "$lte": high}}
        docs = list(self.collection.find(query, fields, sort=sort))
        self.page.reads += len(docs)
        self.page.queries += 1
        if docs:
            self.lowest_time = docs[-1 if sort is DESCENDING else 0]["received_at"]
        return docs

    def whole(self, heads):
        """The full documents of messages read with fewer fields, in the same order."""
        if not heads:
            return []
        query = {"device_id": self.device_id, "seq": {"$in": [head["seq"] for head in heads]}}
        found = {doc["seq"]: doc for doc in self.collection.find(query)}
        self.page.reads += len(found)
        self.page.queries += 1
        return [found[head["seq"]] for head in heads if head["seq"] in found]


def seq_at_or_before(reader, moment, top):
    """(number, received_at) of the newest message up to `top` received at or before `moment`; (0, None) if none.

    Bisection over point probes: received_at grows with the number within a device (the
    bridge never lets it go back), so about log2(history) probes of one document each,
    after two that settle the common cases (the newest is old enough; the first too new).
    """
    newest = _nearest_below(reader, top, 0)
    if newest is None or newest["received_at"] <= moment:
        return (newest["seq"], newest["received_at"]) if newest else (0, None)
    first = _nearest_above(reader, 0, newest["seq"])
    if first["received_at"] > moment:
        return 0, None
    best, low, high = first, first["seq"], newest["seq"] - 1
    while high > low:
        middle = (low + high + 1) // 2
        near = _nearest_below(reader, middle, low)
        if near is None:
            low = middle  # nothing in (low, middle]: the answer is above it, or `best`
        elif near["received_at"] <= moment:
            best, low = near, middle
        else:
            high = near["seq"] - 1
    return best["seq"], best["received_at"]


def seq_bounds(device, since=None, until=None, known_seq=0):
    """The message numbers (low, high] that hold the device's messages received within [since, until].

    Exports read this range upward in bounded steps; `known_seq` as for `message_page`.
    """
    reader = _Reader(device.device_id, HistoryPage())
    high = newest_seq(device, known_seq)
    if until is not None:
        high, _ = seq_at_or_before(reader, until, high)
    low = 0
    if since is not None and high > 0:
        low, _ = seq_at_or_before(reader, since - timedelta(microseconds=1), high)
    return low, high


def _nearest_below(reader, number, floor):
    """The highest message numbered in (floor, number]: one document, more only across a gap."""
    width, high = 1, number
    while high > floor:
        low = max(high - width, floor)
        docs = reader.range(low, high, TIME_FIELDS)
        if docs:
            return docs[0]
        high, width = low, width * GAP_WIDENING
    return None


def _nearest_above(reader, number, ceiling):
    """The lowest message numbered in (number, ceiling]; the same probes upward."""
    width, low = 1, number
    while low < ceiling:
        high = min(low + width, ceiling)
        docs = reader.range(low, high, TIME_FIELDS, sort=ASCENDING)
        if docs:
            return docs[0]
        low, width = high, width * GAP_WIDENING
    return None


def messages_after(device_id, cursor, limit):
    """Messages numbered after `cursor`, oldest first, at most `limit`; and whether more exist.

    Pages call this when they (re)subscribe, to catch up on what was stored since they
    were rendered or while they were disconnected.
    """
    after = decode_cursor(cursor)
    collection = Message._get_collection()
    top = highest_seq(collection, device_id, after)
    query = {"device_id": device_id, "seq": {"$gt": after, "$lte": min(top, after + limit + 1)}}
    newer = list(collection.find(query, sort=ASCENDING))
    return newer[:limit], len(newer) > limit or (top > after + limit + 1)
