"""What the device page and downloads need of telemetry: the recent series, the first chart, CSV rows."""

from datetime import UTC, datetime, timedelta

from carweb.history import newest_seq
from carweb.models import Message, Rollup
from carweb.telemetry.charts import MAX_CHART_SERIES, POINTS_DEFAULT, RAW_FIELDS, TOPUP_WINDOW
from carweb.telemetry.series import aware, from_seconds, message_points

RECENT_MINUTES = 30  # the series a page lists: those of the device's newest minutes with numbers
RECENT_MESSAGES = 20  # and of its newest messages
PAGE_RANGES = {"15m": 900, "1h": 3600, "1d": 86400, "1w": 604800, "all": None}  # the page's buttons
PAGE_SERIES = 3  # series a page charts when its address names none


def recent_series(device, known_seq=0):
    """The series of the device's last RECENT_MINUTES minutes: name, newest value and its time, by name.

    From the minutes' rollups, a range of times up to the device's last message (as its
    document knows it), so the read is bounded on every server however long the
    history; and from its RECENT_MESSAGES newest messages, which may be in no minute yet
    (the bridge writes a minute once it has ended).
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
            if key in names:
                _keep_newer(found, names[key], last["v"], aware(last["at"]))
    top = newest_seq(device, known_seq)
    messages = {"device_id": device.device_id, "seq": {"$gt": top - RECENT_MESSAGES, "$lte": top}}
    for doc in Message._get_collection().find(messages, RAW_FIELDS):
        for name, value in message_points(doc).items():
            _keep_newer(found, name, value, aware(doc["received_at"]))
    return sorted(found.values(), key=lambda series: series["name"])


def _keep_newer(found, name, value, at):
    """Hold (value, time) as the series' newest unless a newer one is held."""
    held = found.get(name)
    if held is None or at > held["at"]:
        found[name] = {"name": name, "value": value, "at": at}


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
    return aware(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")
