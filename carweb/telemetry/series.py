"""Which numbers a message holds, what their series are called, and how values add up (pure).

A series is named by the topic below the device id and the dotted path of the value in
the JSON payload (`telemetry: speed`, `telemetry: engine.temp`, list items by index:
`tires.0`); a bare number is named by its topic alone. Booleans count as 0 and 1;
NaN and infinities (which Python's JSON parser accepts) are not numbers of any series.
"""

import hashlib
import math
from datetime import UTC, datetime
from functools import lru_cache

# A payload contributes at most this many numbers, the first in document order, from at
# most this deep: a hostile payload of a million numbers costs what a car's does.
MAX_FIELDS = 64
MAX_DEPTH = 8
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def numeric_fields(data):
    """(dotted path, value as float) for each number and boolean in a parsed JSON value, capped."""
    found = []
    _walk(data, "", 0, found)
    return found


def _walk(value, path, depth, found):
    """Depth-first, in document order, until MAX_FIELDS are found."""
    kind = type(value)
    if kind is bool:
        found.append((path, 1.0 if value else 0.0))
    elif kind is int or kind is float:
        number = float(value)
        if math.isfinite(number):
            found.append((path, number))
    elif (kind is dict or kind is list) and depth < MAX_DEPTH:
        items = value.items() if kind is dict else enumerate(value)
        for key, item in items:
            if len(found) >= MAX_FIELDS:
                return
            _walk(item, f"{path}.{key}" if path else str(key), depth + 1, found)


def series_name(topic, path):
    """`<topic below the device id>: <path>`; either part alone when the other is empty."""
    return name_below(topic.partition("/")[2], path)


def name_below(below, path):
    """The series name of `path` in messages on a topic that is `below` under the device id."""
    if below and path:
        return f"{below}: {path}"
    return below or path or "value"


@lru_cache(maxsize=16384)
def series_key(name):
    """The short field name a series is stored under in rollups (its names are kept beside)."""
    return "s" + hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()


def message_points(doc):
    """{series name: value} of one stored message; empty for outbound, non-JSON or number-less ones."""
    if doc.get("direction", "in") != "in" or doc.get("kind") != "json" or "data" not in doc:
        return {}
    return {series_name(doc["topic"], path): value for path, value in numeric_fields(doc["data"])}


def new_stats(value):
    """The count, sum, min and max of one value."""
    return {"n": 1, "s": value, "lo": value, "hi": value}


def add_value(stats, value):
    """Fold one more value into `stats` (in place)."""
    stats["n"] += 1
    stats["s"] += value
    stats["lo"] = min(stats["lo"], value)
    stats["hi"] = max(stats["hi"], value)


def merge_stats(into, other):
    """Fold the stats of other values into `into` (in place); returns it."""
    into["n"] += other["n"]
    into["s"] += other["s"]
    into["lo"] = min(into["lo"], other["lo"])
    into["hi"] = max(into["hi"], other["hi"])
    return into


def aware(moment):
    """Datetimes from the database as aware UTC (naive ones are UTC, as pymongo returns them)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def seconds_since_epoch(moment):
    """A datetime (naive ones are UTC) as seconds since 1970."""
    return (aware(moment) - EPOCH).total_seconds()


def floor_time(moment, seconds):
    """The start of the `seconds`-wide bucket (aligned to the epoch) that holds `moment`, in UTC."""
    return from_seconds(math.floor(seconds_since_epoch(moment) / seconds) * seconds)


def from_seconds(value):
    """Seconds since 1970 as an aware UTC datetime."""
    return datetime.fromtimestamp(value, UTC)
