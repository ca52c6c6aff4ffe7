"""Pages of a device's message history: exact, and bounded in documents read whatever the history's shape.

The documents a page reads are counted by the database itself (`documents_examined`).
"""

from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from carweb.history import (
    PAGE_READS,
    HistoryQuery,
    decode_cursor,
    encode_cursor,
    message_page,
    messages_after,
)
from carweb.models import Device, Message
from tests.db_support import documents_examined

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PAGE = 50
HISTORY = 3000
# The pages a filter may read, plus the small probes that find the newest number and a time's number.
READ_BOUND = PAGE_READS * PAGE + 60


def seed(device_id, times, topics=None, skip=()):
    """Store one message per time, numbered 1, 2, 3... (leaving out numbers in `skip`), and the device."""
    docs, number = [], 0
    for i, at in enumerate(times):
        number += 1
        while number in skip:
            number += 1
        docs.append(
            {
                "_id": ObjectId(),
                "device_id": device_id,
                "seq": number,
                "topic": topics[i % len(topics)] if topics else f"{device_id}/telemetry",
                "payload": str(i).encode(),
                "text": str(i),
                "kind": "text",
                "size": len(str(i)),
                "received_at": at,
                "direction": "in",
                "qos": 1,
            }
        )
    for first in range(0, len(docs), 5000):
        Message._get_collection().insert_many(docs[first : first + 5000])
    device = Device(
        device_id=device_id,
        created_at=min(times),
        last_seen_at=max(times),
        message_count=len(times),
        last_seq=number,
    ).save()
    return device, docs


def newest_first(docs):
    """Documents in the order the history shows them."""
    return sorted(docs, key=lambda d: d["seq"], reverse=True)


def walk(device, limit=10, **filters):
    """Follow `older` and `searched_to` cursors through every page; return all ids and the pages."""
    pages, cursor = [], None
    while True:
        page = message_page(device, HistoryQuery(before=cursor, limit=limit, **filters))
        pages.append(page)
        following = page.older or page.searched_to
        if following is None:
            return [m["_id"] for p in pages for m in p.messages], pages
        cursor = decode_cursor(following)


def burst(start, count):
    """`count` arrival times within one second from `start`, several per millisecond (BSON's precision)."""
    return [start + timedelta(milliseconds=n * 1000 // count) for n in range(count)]


SHAPES = {
    "steady": lambda: [T0 + timedelta(seconds=n) for n in range(HISTORY)],
    "one burst": lambda: burst(T0, HISTORY),
    "burst then silence": lambda: burst(T0, HISTORY) + [T0 + timedelta(seconds=70)],
    "silence then burst": lambda: [T0] + burst(T0 + timedelta(days=1), HISTORY),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_newest_page_reads_a_page_whatever_the_shape(app, shape):
    """The newest fifty, exactly, reading about fifty documents: no window to guess, no sort of all."""
    device, docs = seed(shape.replace(" ", "-"), SHAPES[shape]())
    page, examined = documents_examined(lambda: message_page(device, HistoryQuery(limit=PAGE)))
    assert [m["_id"] for m in page.messages] == [d["_id"] for d in newest_first(docs)[:PAGE]]
    assert page.older == encode_cursor(page.messages[-1]) and examined <= PAGE + 10


@pytest.mark.parametrize("shape", SHAPES)
def test_a_cursor_deep_in_the_past_reads_a_page(app, shape):
    """The page below message 40 of thousands reads the 39 older ones and no more."""
    device, docs = seed(shape.replace(" ", "-"), SHAPES[shape]())
    page, examined = documents_examined(lambda: message_page(device, HistoryQuery(before=40, limit=PAGE)))
    assert [m["seq"] for m in page.messages] == list(range(39, 0, -1)) and page.older is None
    assert examined <= PAGE + 10


def test_topic_filter_that_matches_nothing_reads_a_bounded_number_and_says_how_far(app):
    """No match among 3,000: the page reads four pages' worth and offers to search older."""
    device, docs = seed("nomatch", SHAPES["steady"]())
    query = HistoryQuery(topic="nomatch/firmware/#", limit=PAGE)
    page, examined = documents_examined(lambda: message_page(device, query))
    assert page.messages == [] and page.older is None
    assert examined <= READ_BOUND
    searched = decode_cursor(page.searched_to)
    assert 1 < searched < HISTORY and page.searched_to_time == docs[searched - 1]["received_at"]


@pytest.mark.parametrize("shape", ["one burst", "burst then silence", "silence then burst"])
def test_time_filter_that_matches_nothing_is_answered_in_bounded_reads(app, shape):
    """A range with no message (in the silence, or before the first) finds that out in a few probes."""
    device, _ = seed(shape.replace(" ", "-"), SHAPES[shape]())
    for since, until in (
        (T0 + timedelta(seconds=10), T0 + timedelta(seconds=20)),
        (T0 - timedelta(days=2), T0),
    ):
        query = HistoryQuery(since=since, until=until - timedelta(microseconds=1), limit=PAGE)
        page, examined = documents_examined(lambda q=query: message_page(device, q))
        assert page.messages == [] and page.older is None and page.searched_to is None
        assert examined <= READ_BOUND


def test_time_range_inside_a_burst_is_exact(app):
    """`since` and `until` include their ends, inside a burst of several messages per millisecond."""
    device, docs = seed("range", burst(T0, HISTORY))
    since, until = docs[1000]["received_at"], docs[1100]["received_at"]
    ids, pages = walk(device, limit=PAGE, since=since, until=until)
    assert ids == [d["_id"] for d in newest_first(docs) if since <= d["received_at"] <= until]
    assert len(ids) >= 101


def test_pages_walk_the_whole_history_newest_first_across_gaps(app):
    """Numbers a redelivery took leave gaps; pages neither skip nor repeat a message."""
    device, docs = seed("gaps", SHAPES["steady"]()[:95], skip={5, 6, 7, 50, 51, 90})
    ids, pages = walk(device)
    assert ids == [d["_id"] for d in newest_first(docs)]
    assert all(len(p.messages) == 10 for p in pages[:-1])


def test_topic_filter_with_wildcards_pages_through_matches_only(app):
    """A topic filter keeps paging by cursor over matching messages only."""
    times = [T0 + timedelta(seconds=i) for i in range(600)]
    device, docs = seed(
        "topics", times, topics=["topics/telemetry", "topics/firmware/status", "topics/status"]
    )
    ids, _ = walk(device, limit=PAGE, topic="topics/+/status")
    assert ids == [d["_id"] for d in newest_first(docs) if d["topic"] == "topics/firmware/status"]


def test_newest_page_sees_messages_the_device_document_does_not_count_yet(app):
    """The bridge writes device documents behind the stream: the page looks above their last_seq."""
    device, docs = seed("lagging", SHAPES["steady"]()[:120])
    device.last_seq = 100
    page = message_page(device, HistoryQuery(limit=PAGE))
    assert page.messages[0]["seq"] == 120 and page.newest == 120


def test_device_without_messages_has_an_empty_page(app):
    """A device record alone gives an empty page and no cursor."""
    device = Device(device_id="quiet", created_at=T0).save()
    page = message_page(device, HistoryQuery())
    assert page.messages == [] and page.older is None and page.searched_to is None


def test_cursor_round_trips_and_refuses_garbage():
    """A cursor is a message number; anything else is refused."""
    assert decode_cursor(encode_cursor({"seq": 123})) == 123
    for bad in ("", "abc", "-1", "1.5", "١٢", "9" * 19, None, 12, ["1"]):
        with pytest.raises(ValueError):
            decode_cursor(bad)


def test_catch_up_after_a_cursor_pages_oldest_first_across_gaps(app):
    """All messages after the 100th, oldest first, page by page; nothing after the newest."""
    _, docs = seed("catchup", burst(T0, 205), skip={120, 121})
    order = sorted(docs, key=lambda d: d["seq"])
    wanted = [d["_id"] for d in order[100:]]
    got, cursor, more = [], encode_cursor(order[99]), True
    while more:
        page, more = messages_after("catchup", cursor, 50)
        got += [d["_id"] for d in page]
        cursor = encode_cursor(page[-1])
    assert got == wanted
    assert messages_after("catchup", encode_cursor(order[-1]), 50) == ([], False)


def test_the_newest_number_is_found_in_few_reads_however_far_the_document_lags(app):
    """3,000 messages above the device's last_seq (a busy device, flushes behind): a few dozen reads."""
    device, docs = seed("far-behind", SHAPES["one burst"](), skip={1500, 1501, 2999})
    device.last_seq = 1
    page, examined = documents_examined(lambda: message_page(device, HistoryQuery(limit=PAGE)))
    assert page.newest == docs[-1]["seq"] and page.messages[0]["_id"] == docs[-1]["_id"]
    assert examined <= PAGE + 200
