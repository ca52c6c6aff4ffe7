"""A chart's data: each series as at most about `points` buckets of min, max and mean over a time range.

Short ranges that hold few messages are read message by message (at most RAW_MAX).
Longer ones are read from rollups (`carweb.models.telemetry`): minute buckets from the
hours' documents, hour buckets from the days', day buckets from the days' totals, so a
range costs about one document per hour or day whatever the device sent. Spans not
folded yet (the current hour and day, or any a crash left) are read one level finer, and
the newest messages the bridge has not rolled up yet are added from `messages`.
"""

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from carweb.history import newest_seq, seq_bounds
from carweb.models import Message, Rollup
from carweb.telemetry.series import (
    add_value,
    from_seconds,
    merge_stats,
    message_points,
    new_stats,
    seconds_since_epoch,
    series_key,
)

POINTS_DEFAULT, POINTS_MAX = 1000, 2000
MAX_CHART_SERIES = 16  # series one request may ask for
RECENT_MINUTES = 30  # the series a page lists: those of the device's newest minutes with numbers
PAGE_RANGES = {"15m": 900, "1h": 3600, "1d": 86400, "1w": 604800, "all": None}  # the page's buttons
PAGE_SERIES = 3  # series a page charts when its address names none
RAW_MAX = 1000  # messages a chart reads one by one at most (50 ms on SecantusDB); above it, rollups
# Rollup documents a chart reads at most for a level before it takes the next coarser one
# (SecantusDB reads one of an hour's 60 minute buckets of a series in about 0.4 ms).
DOC_BUDGET = 48
TOPUP_MAX = 2000  # messages stored but not rolled up yet that a chart adds at most
TOPUP_WINDOW = timedelta(minutes=10)  # ranges ending this close to now look for them
SPAN = {"m": 60, "h": 3600, "d": 86400}
SUB = {"h": 60, "d": 3600}
# For each bucket width, the rollups that hold buckets that wide, coarsest first: the
# level, and whether its totals (f) or its buckets within (b) are that wide.
SOURCES = {
    60: (("h", "b"), ("m", "f")),
    3600: (("d", "b"), ("h", "f"), ("m", "f")),
    86400: (("d", "f"), ("h", "f"), ("m", "f")),
}
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


class Reads:
    """Documents and queries a chart cost (tests and benchmarks check the bound)."""

    def __init__(self):
        self.docs = 0
        self.queries = 0

    def find(self, collection, query, projection=None, **kwargs):
        """`collection.find` as a list, counted."""
        docs = list(collection.find(query, projection, **kwargs))
        self.docs += len(docs)
        self.queries += 1
        return docs


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
    if not since <= _aware(doc["received_at"]) < until:
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
        _merge_into(buckets[math.floor(start / bucket) * bucket], stats)
    return bucket, SOURCE_NAMES[level], buckets


@dataclass
class Gathered:
    """Buckets of one width from rollups: {start seconds: {key: stats}}, names, the newest number seen."""

    buckets: dict = field(default_factory=lambda: defaultdict(dict))
    names: dict = field(default_factory=dict)
    hi_seq: int = 0
    count: int = 0
    lo_seq: int | None = None
    last: dict = field(default_factory=dict)


def gather(device_id, low, high, width, keys=None, reads=None, below=None):
    """Buckets `width` seconds wide in [low, high) (seconds since 1970, aligned to `width`).

    Reads each source of SOURCES[width] in turn for the spans the coarser ones did not
    cover; `keys` limits the series read (all when None); `below` leaves out that level
    and coarser ones (folding a level reads only finer ones).
    """
    reads = reads or Reads()
    out = Gathered()
    todo = [(low, high)]
    collection = Rollup._get_collection()
    for level, part in SOURCES[width]:
        if below is not None and SPAN[level] >= SPAN[below]:
            continue
        covered = []
        for start, end in todo:
            query = {
                "device_id": device_id,
                "level": level,
                "start": {
                    "$gte": from_seconds(math.floor(start / SPAN[level]) * SPAN[level]),
                    "$lt": from_seconds(end),
                },
            }
            for doc in reads.find(collection, query, _projection(part, keys)):
                covered.append(_add_rollup(out, doc, level, part, start, end, width))
        todo = subtract(todo, covered)
        if not todo:
            break
    return out


def _projection(part, keys):
    """The fields a chart needs of a rollup: its part, only the wanted series when named."""
    projection = {"start": 1, "c": 1, "lo_seq": 1, "hi_seq": 1, "names": 1, "last": 1}
    if keys is None:
        projection[part] = 1
    else:
        projection.update({f"{part}.{key}": 1 for key in keys})
    return projection


def _add_rollup(out, doc, level, part, start, end, width):
    """Fold one rollup's buckets within [start, end) into `out`; the span of it that is covered."""
    begins = seconds_since_epoch(doc["start"])
    out.names.update(doc.get("names") or {})
    out.hi_seq = max(out.hi_seq, doc.get("hi_seq") or 0)
    out.count += doc.get("c") or 0
    if doc.get("lo_seq") is not None:
        out.lo_seq = doc["lo_seq"] if out.lo_seq is None else min(out.lo_seq, doc["lo_seq"])
    for key, value in (doc.get("last") or {}).items():
        if key not in out.last or value["at"] > out.last[key]["at"]:
            out.last[key] = value
    for key, held in (doc.get(part) or {}).items():
        pieces = held.items() if part == "b" else [("0", held)]
        for offset, stats in pieces:
            moment = begins + int(offset) * SUB.get(level, 0)
            if start <= moment < end:
                target = out.buckets[math.floor(moment / width) * width]
                _merge_into(target, {key: stats})
    return max(begins, start), min(begins + SPAN[level], end)


def _merge_into(target, stats_by_key):
    """Add {key: stats} into a bucket's {key: stats} (copies, never the source's dicts)."""
    for key, stats in stats_by_key.items():
        held = target.get(key)
        if held is None:
            target[key] = dict(stats)
        else:
            merge_stats(held, stats)


def subtract(intervals, covered):
    """The parts of sorted, disjoint `intervals` that no interval of `covered` overlaps."""
    covered = sorted(covered)
    left = []
    for start, end in intervals:
        for c_start, c_end in covered:
            if c_end <= start or c_start >= end:
                continue
            if c_start > start:
                left.append((start, c_start))
            start = max(start, c_end)
        if start < end:
            left.append((start, end))
    return left


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


def recent_series(device):
    """The series of the device's last RECENT_MINUTES minutes of rollups: name, newest value and its time, by name.

    The minutes are a range of times up to the device's last message (as its document
    knows it), so the read is bounded on every server, however long the history.
    """
    newest = device.last_seen_at or datetime.now(UTC)
    query = {
        "device_id": device.device_id,
        "level": "m",
        "start": {"$gte": newest - timedelta(minutes=RECENT_MINUTES), "$lte": newest + TOPUP_WINDOW},
    }
    found = {}
    for doc in Rollup._get_collection().find(query, {"names": 1, "last": 1}):
        names = doc.get("names") or {}
        for key, last in (doc.get("last") or {}).items():
            held = found.get(names.get(key))
            if key in names and (held is None or _aware(last["at"]) > held["at"]):
                found[names[key]] = {"name": names[key], "value": last["v"], "at": _aware(last["at"])}
    return sorted(found.values(), key=lambda series: series["name"])


def first_chart_query(args, listed, now):
    """The query of the chart a device page draws first, from the page's own query string.

    The page keeps its chart in `chart_range` (a key of PAGE_RANGES), `chart_series`
    (repeated) or `chart_since`/`chart_until` (seconds since 1970); by default the first
    PAGE_SERIES series listed over the last hour. The page names this request in its head,
    so the browser asks for the data while it loads the scripts. None without series.
    """
    names = args.getlist("chart_series")[:MAX_CHART_SERIES] or [s["name"] for s in listed[:PAGE_SERIES]]
    if not names:
        return None
    query = {"series": names, "points": POINTS_DEFAULT}
    since, until = _seconds(args.get("chart_since")), _seconds(args.get("chart_until"))
    if since is not None and until is not None and since < until:
        query.update(since=iso_time(from_seconds(since)), until=iso_time(from_seconds(until)))
    elif (span := PAGE_RANGES.get(args.get("chart_range"), PAGE_RANGES["1h"])) is not None:
        query["since"] = iso_time(now - timedelta(seconds=span))
    return query


def _seconds(text):
    """A number of seconds from a query string, or None when it is not a finite one in range."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if 0 <= value < 253402300800 else None  # up to the year 9999


def chart_rows(result):
    """The chart as CSV rows after a header: series, bucket start (ISO, UTC), min, max, mean, count."""
    yield ["series", "time", "min", "max", "mean", "count"]
    for series in result.series:
        for start, low, high, mean, count in series["points"]:
            yield [series["name"], iso_time(from_seconds(start)), low, high, mean, count]


def iso_time(moment):
    """ISO 8601 in UTC with milliseconds and Z."""
    return _aware(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _aware(moment):
    """Datetimes from the database as aware UTC (whatever the connection's tz_aware)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
