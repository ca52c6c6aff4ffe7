"""Hours and days of rollups folded into one document each once they have ended, from their minutes (hours).

An hour's document holds its series' totals and their 60 minute buckets, a day's the
same with 24 hour buckets, so a chart of a week of minute (hour) buckets reads one
document per hour (day). Folding reads the finer level, and writes the whole document
again each time, so it can be repeated: a minute written late (after a database outage,
by another bridge) has its hour folded again.
"""

from datetime import UTC, datetime, timedelta

from carweb.bridge.rollups import DAY, FOLD_GRACE, HOUR, rollups_collection
from carweb.telemetry.buckets import SPAN, SUB, gather
from carweb.telemetry.series import floor_time, merge_stats, seconds_since_epoch

LEVEL_OF = {HOUR: "h", DAY: "d"}
MAX_FOLDED = 200  # an hour or a day keeps the series with the most values, at most this many


def fold_closed(book, now=None, pause=None, limit=None):
    """Fold the hours (then days) this process wrote minutes of, once they have ended, oldest first; how many.

    At most `limit` a call: at the end of an hour every device that spoke in it is due,
    and the flush that calls this must go on writing devices and minutes meanwhile
    (charts read an hour's minutes until it is folded).
    """
    now = now or datetime.now(UTC)
    folded = 0
    for spans, size, parents in ((book.hours, HOUR, book.days), (book.days, DAY, None)):
        due = sorted(s for s in spans if s[1] + timedelta(seconds=size) + FOLD_GRACE <= now)
        for device_id, start in due if limit is None else due[: max(limit - folded, 0)]:
            started = datetime.now(UTC)
            fold(device_id, LEVEL_OF[size], start)
            spans.discard((device_id, start))
            if parents is not None:
                parents.add((device_id, floor_time(start, DAY)))
            folded += 1
            if pause is not None:
                pause((datetime.now(UTC) - started).total_seconds())
    return folded


def fold(device_id, level, start):
    """Write a device's hour (day) document from its minutes (hours): buckets within, totals, names, newest values."""
    low = seconds_since_epoch(start)
    found = gather(device_id, low, low + SPAN[level], SUB[level], below=level)
    totals, within = {}, {}
    for moment, by_key in found.buckets.items():
        offset = str(int((moment - low) // SUB[level]))
        for key, stats in by_key.items():
            within.setdefault(key, {})[offset] = stats
            held = totals.get(key)
            totals[key] = dict(stats) if held is None else merge_stats(held, stats)
    kept = sorted(totals, key=lambda key: -totals[key]["n"])[:MAX_FOLDED]
    doc = {
        "device_id": device_id,
        "level": level,
        "start": start,
        "c": found.count,
        "lo_seq": found.lo_seq,
        "hi_seq": found.hi_seq,
        "f": {key: totals[key] for key in kept},
        "b": {key: within[key] for key in kept},
        "names": {key: found.names[key] for key in kept if key in found.names},
        "last": {key: found.last[key] for key in kept if key in found.last},
    }
    query = {"device_id": device_id, "level": level, "start": start}
    rollups_collection().replace_one(query, doc, upsert=True)
