"""Buckets of one width from a device's rollups: each span from the coarsest rollups that cover it.

Minute buckets come from the hours' documents (their buckets within), hour buckets from
the days', day buckets from the days' totals; spans a coarser level does not cover (the
current hour and day, or any a crash left unfolded) are read one level finer, down to
minutes. Times are seconds since 1970, aligned to the buckets' width.
"""

import math
from collections import defaultdict
from dataclasses import dataclass, field

from carweb.models import Rollup
from carweb.telemetry.series import from_seconds, merge_stats, seconds_since_epoch

SPAN = {"m": 60, "h": 3600, "d": 86400}
SUB = {"h": 60, "d": 3600}
# For each bucket width, the rollups that hold buckets that wide, coarsest first: the
# level, and whether its totals (f) or its buckets within (b) are that wide.
SOURCES = {
    60: (("h", "b"), ("m", "f")),
    3600: (("d", "b"), ("h", "f"), ("m", "f")),
    86400: (("d", "f"), ("h", "f"), ("m", "f")),
}


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
                merge_into(target, {key: stats})
    return max(begins, start), min(begins + SPAN[level], end)


def merge_into(target, stats_by_key):
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
