"""Rollups of devices' numeric series: per minute (kept by the bridge), per hour and per day (folded from those)."""

from mongoengine import DateTimeField, DictField, Document, IntField, StringField

LEVELS = ("m", "h", "d")


class Rollup(Document):
    """Count, sum, min and max of each series of one device over one minute, hour or day.

    `f` holds the totals per series key, `b` (hours and days) the same per minute or hour
    within it, keyed by the offset ("0".."59", "0".."23"); `names` maps keys to series
    names, `last` holds each series' newest value and its time. Minutes also keep, per
    bridge process, the newest message `_id` folded in (`w`), which makes their updates
    idempotent, and every level the range of message numbers it covers.
    """

    device_id = StringField(required=True)
    level = StringField(required=True, choices=LEVELS)
    start = DateTimeField(required=True)
    c = IntField()  # inbound messages folded in, with numbers or without
    lo_seq = IntField()
    hi_seq = IntField()
    f = DictField()
    b = DictField()
    names = DictField()
    last = DictField()
    w = DictField()

    meta = {
        "collection": "telemetry",
        "auto_create_index": False,
        "indexes": [
            {"fields": ["device_id", "level", "start"], "name": "device_level_start", "unique": True}
        ],
    }
