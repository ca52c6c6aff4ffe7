"""A chart's data: each series as at most about `points` buckets of min, max and mean over a time range.

Short ranges that hold few messages are read message by message (at most RAW_MAX).
Longer ones are read from rollups (`buckets.py`): minute buckets from the hours'
documents, hour buckets from the days', day buckets from the days' totals, so a range
costs about one document per hour or day whatever the device sent; the newest messages
the bridge has not rolled up yet are added from `messages`.
"""

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from carweb.history import newest_seq, seq_bounds
from carweb.models import Message
from carweb.telemetry.buckets import Reads, gather, merge_into
from carweb.telemetry.series import (
    add_value,
    aware,
    message_points,
    new_stats,
    seconds_since_epoch,
    series_key,
)

POINTS_DEFAULT, POINTS_MAX = 1000, 2000
MAX_CHART_SERIES = 16  # series one request may ask for
RAW_MAX = 1000  # messages a chart reads one by one at most (50 ms on SecantusDB); above it, rollups
# Rollup documents a chart reads at most for a level before it takes the next coarser one
# (SecantusDB reads one of an hour's 60 minute buckets of a series in about 0.4 ms).
DOC_BUDGET = 48
TOPUP_MAX = 2000  # messages stored but not rolled up yet that a chart adds at most
TOPUP_WINDOW = timedelta(minutes=10)  # ranges ending this close to now look for them
SOURCE_NAMES = {60: "minutes", 3600: "hours", 86400: "days"}
LEVEL_SIZES = (60, 3600, 86400)
NICE_STEPS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60)
# Buckets this wide are read from documents that span the next: minutes from hours, hours from days.
COARSER = {60: 3600, 3600: 86400}
RAW_FIELDS = {"received_at": 1, "topic": 1, "data": 1, "kind": 1, "direction": 1}


@dataclass
class Chart:
    """The answer: bucket width, where it came from, and each series' points [t, min, max, mean, count]."""

    since: datetime
    until: datetime
    bucket_seconds: float
    source: str
    series: list = field(default_factory=list)  # {"name", "points"}
    reads: int = 0
    queries: int = 0


def chart(device, names, since=None, until=None, points=POINTS_DEFAULT, known_seq=0, now=None):
    """The chart of `names` (series names) of `device` over [since, until); whole history by default."""
    now = now or datetime.now(UTC)
    until = until or now
    since = since or device.created_at or until - timedelta(hours=1)
    keys = {series_key(name): name for name in names}
    width = (seconds_since_epoch(until) - seconds_since_epoch(since)) / points
    reads = Reads()
    result = None
    if width < 60:
        result = _from_messages(device, keys, since, until, width, known_seq, reads)
    if result is None:
        result = _from_rollups(
            device, keys, since, until, width, known_seq if until > now - TOPUP_WINDOW else None, reads
        )
    bucket, source, buckets = result
    return Chart(
        since=since,
        until=until,
        bucket_seconds=bucket,
        source=source,
        series=[{"name": name, "points": _points(buckets, key)} for key, name in keys.items()],
        reads=reads.docs,
        queries=reads.queries,
    )


def _from_messages(device, keys, since, until, width, known_seq, reads):
    """(bucket, "messages", buckets) when the range holds at most RAW_MAX messages, else None."""
    low, high = seq_bounds(device, since, until, known_seq=known_seq)
    if high - low > RAW_MAX:
        return None
    bucket = nice_bucket(width)
    query = {"device_id": device.device_id, "seq": {"$gt": low, "$lte": high}}
    buckets = defaultdict(dict)
    for doc in reads.find(Message._get_collection(), query, RAW_FIELDS):
        _add_message(buckets, doc, keys, since, until, bucket)
    return bucket, "messages", buckets


def nice_bucket(width):
    """The smallest of 1, 2, 5, 10, 15, 30 s (or 1-2-5 steps of milliseconds) at least `width`."""
    for step in NICE_STEPS:
        if step >= width:
            return step
    return NICE_STEPS[-1]


def _add_message(buckets, doc, keys, since, until, bucket):
    """Fold one message's values of the wanted series into the bucket of its time, if in range."""
    if not since <= aware(doc["received_at"]) < until:
        return
    start = math.floor(seconds_since_epoch(doc["received_at"]) / bucket) * bucket
    for name, value in message_points(doc).items():
        key = series_key(name)
        if key in keys:
            held = buckets[start].get(key)
            if held is None:
                buckets[start][key] = new_stats(value)
            else:
                add_value(held, value)


def _from_rollups(device, keys, since, until, width, known_seq, reads):
    """(bucket, source, buckets) from the coarsest rollups that give enough buckets within the budget."""
    span = seconds_since_epoch(until) - seconds_since_epoch(since)
    level = max(size for size in LEVEL_SIZES if size <= max(width, 60))
    while level in COARSER and span / COARSER[level] > DOC_BUDGET:
        level = COARSER[level]  # one document per hour (day) read would be too many: hours (days)
    bucket = level * max(math.ceil(width / level), 1)
    low = math.floor(seconds_since_epoch(since) / level) * level
    high = math.ceil(seconds_since_epoch(until) / level) * level
    gathered = gather(device.device_id, low, high, level, list(keys), reads)
    if known_seq is not None:
        top_up(gathered, device, keys, since, until, level, known_seq, reads)
    buckets = defaultdict(dict)
    for start, stats in gathered.buckets.items():
        merge_into(buckets[math.floor(start / bucket) * bucket], stats)
    return bucket, SOURCE_NAMES[level], buckets


def top_up(gathered, device, keys, since, until, width, known_seq, reads):
    """Add the newest messages stored after the rollups read (at most TOPUP_MAX)."""
    newest = newest_seq(device, known_seq)
    reads.queries += 1
    low = max(gathered.hi_seq, newest - TOPUP_MAX)
    if newest <= low:
        return
    query = {"device_id": device.device_id, "seq": {"$gt": low, "$lte": newest}}
    for doc in reads.find(Message._get_collection(), query, RAW_FIELDS):
        _add_message(gathered.buckets, doc, keys, since, until, width)


def _points(buckets, key):
    """[start, min, max, mean, count] of one series, oldest first; buckets without it are left out."""
    points = []
    for start in sorted(buckets):
        stats = buckets[start].get(key)
        if stats is not None:
            points.append([start, stats["lo"], stats["hi"], stats["s"] / stats["n"], stats["n"]])
    return points
