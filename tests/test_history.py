"""Keyset pages of a device's message history."""

from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from carweb.history import HistoryQuery, decode_cursor, encode_cursor, message_page, messages_after
from carweb.models import Device, Message

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def seed(device_id, times, topics=None):
    """Store one message per time (and topic) and a device record whose counters match."""
    docs = [
        {
            "_id": ObjectId(),
            "device_id": device_id,
            "topic": (topics[i % len(topics)] if topics else f"{device_id}/telemetry"),
            "payload": str(i).encode(),
            "text": str(i),
            "kind": "text",
            "size": len(str(i)),
            "received_at": at,
            "direction": "in",
            "qos": 1,
        }
        for i, at in enumerate(times)
    ]
    Message._get_collection().insert_many(docs)
    device = Device(
        device_id=device_id, created_at=min(times), last_seen_at=max(times), message_count=len(times)
    )
    device.save()
    return device, docs


def newest_first(docs):
    """Documents in the order the history shows them."""
    return sorted(docs, key=lambda d: (d["received_at"], d["_id"]), reverse=True)


def walk(device, **filters):
    """Follow `older` cursors through every page; return all ids and the pages."""
    pages, cursor = [], None
    while True:
        page = message_page(device, HistoryQuery(before=cursor, limit=10, **filters))
        pages.append(page)
        if page.older is None:
            return [m["_id"] for p in pages for m in p.messages], pages
        cursor = decode_cursor(page.older)


def test_pages_walk_the_whole_history_newest_first_without_gaps_across_ties(app):
    """Messages stored in the same millisecond are neither skipped nor repeated."""
    times = [T0 + timedelta(seconds=i // 7) for i in range(95)]  # groups of 7 share a time
    device, docs = seed("ties", times)
    ids, pages = walk(device)
    assert ids == [d["_id"] for d in newest_first(docs)]
    assert len(pages) == 10 and all(len(p.messages) == 10 for p in pages[:-1])


def test_first_page_of_a_steady_device_takes_one_bounded_query(app):
    """With a steady rate the estimated window holds the whole page at the first try."""
    device, docs = seed("steady", [T0 + timedelta(seconds=i) for i in range(3000)])
    page = message_page(device, HistoryQuery(limit=50))
    assert page.queries == 1
    assert [m["_id"] for m in page.messages] == [d["_id"] for d in newest_first(docs)[:50]]


def test_window_widens_to_reach_messages_long_ago(app):
    """A quiet year between bursts: the window widens until the page is full."""
    times = [T0 + timedelta(seconds=i) for i in range(5)] + [
        T0 + timedelta(days=365, seconds=i) for i in range(5)
    ]
    device, docs = seed("bursty", times)
    page = message_page(device, HistoryQuery(limit=8))
    assert [m["_id"] for m in page.messages] == [d["_id"] for d in newest_first(docs)[:8]]
    assert page.older is not None and page.queries < 20


def test_topic_filter_with_wildcards_pages_through_matches_only(app):
    """A topic filter keeps paging by cursor over matching messages only."""
    times = [T0 + timedelta(seconds=i) for i in range(60)]
    device, docs = seed(
        "topics", times, topics=["topics/telemetry", "topics/firmware/status", "topics/status"]
    )
    ids, _ = walk(device, topic="topics/+/status")
    assert ids == [d["_id"] for d in newest_first(docs) if d["topic"] == "topics/firmware/status"]


def test_time_range_bounds_both_ends(app):
    """`since` and `until` include their ends and exclude everything outside."""
    device, docs = seed("range", [T0 + timedelta(minutes=i) for i in range(100)])
    since, until = T0 + timedelta(minutes=20), T0 + timedelta(minutes=44)
    ids, _ = walk(device, since=since, until=until)
    assert ids == [d["_id"] for d in newest_first(docs) if since <= d["received_at"] <= until]
    assert len(ids) == 25


def test_device_without_messages_has_an_empty_page(app):
    """A device record alone gives an empty page and no cursor."""
    device = Device(device_id="quiet", created_at=T0).save()
    page = message_page(device, HistoryQuery())
    assert page.messages == [] and page.older is None


def test_cursor_round_trips_and_refuses_garbage():
    """A cursor names a time (ms) and an _id; anything else is refused."""
    doc = {"received_at": T0 + timedelta(milliseconds=123), "_id": ObjectId()}
    assert decode_cursor(encode_cursor(doc)) == (doc["received_at"], doc["_id"])
    for bad in ("", "123", "abc_def", "1_" + "z" * 24, "1" * 20 + "_" + "a" * 24):
        with pytest.raises(ValueError):
            decode_cursor(bad)


def test_catch_up_after_a_cursor_inside_a_burst_of_one_millisecond(app):
    """200 messages in one millisecond, then 5 later: all after the 100th, oldest first, page by page."""
    times = [T0] * 200 + [T0 + timedelta(milliseconds=n) for n in range(1, 6)]
    _, docs = seed("burst", times)
    order = sorted(docs, key=lambda d: (d["received_at"], d["_id"]))
    wanted = [d["_id"] for d in order[100:]]

    got, cursor, more = [], encode_cursor(order[99]), True
    while more:
        page, more = messages_after("burst", cursor, 50)
        got += [d["_id"] for d in page]
        cursor = encode_cursor(page[-1])
    assert got == wanted
    everything, more = messages_after("burst", encode_cursor(order[99]), 105)
    assert [d["_id"] for d in everything] == wanted and not more
    assert messages_after("burst", encode_cursor(order[-1]), 50) == ([], False)
