"""Marshmallow schemas of the JSON API: they validate what comes in, shape what goes out, and make the OpenAPI document."""

from datetime import UTC, datetime

from bson import ObjectId
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from carweb.bridge.topics import MAX_DEVICE_ID_LENGTH
from carweb.devices.forms import FIRST_YEAR, LAST_YEAR
from carweb.export import FORMATS, payload_text
from carweb.history import decode_cursor
from carweb.models.firmware import (
    DEFAULT_FAILURE_THRESHOLD,
    DEFAULT_RETRY_LIMIT,
    DEFAULT_STEP_TIMEOUT,
    JOB_STATES,
    ROLLOUT_STATES,
)
from carweb.models.message import DIRECTIONS, KINDS
from carweb.ota.rollouts import MAX_RETRIES, MAX_STEP_TIMEOUT, RolloutError, check_waves
from carweb.telemetry.charts import MAX_CHART_SERIES, POINTS_DEFAULT, POINTS_MAX

MAX_LIMIT = 200
EARLIEST = datetime(FIRST_YEAR, 1, 1, tzinfo=UTC)
LATEST = datetime(LAST_YEAR, 12, 31, 23, 59, 59, tzinfo=UTC)


def utc_time(description):
    """An ISO 8601 time; without a zone it is UTC. Years FIRST_YEAR..LAST_YEAR."""
    return fields.AwareDateTime(
        default_timezone=UTC,
        validate=validate.Range(min=EARLIEST, max=LATEST),
        metadata={"description": description},
    )


def limit_field(default=50):
    """How many items a page holds at most."""
    return fields.Integer(load_default=default, validate=validate.Range(1, MAX_LIMIT))


def nullable(field_class, *args, **kwargs):
    """A field that is always in the output, null when the value is missing."""
    return field_class(*args, allow_none=True, dump_default=None, **kwargs)


class SequenceCursor(fields.String):
    """A cursor that names a position by number (devices and messages)."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return decode_cursor(text)
        except ValueError as exc:
            raise ValidationError("Not a cursor of this list.") from exc


class ObjectIdString(fields.String):
    """The id of a stored document: 24 hexadecimal digits."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if not ObjectId.is_valid(text) or len(text) != 24:
            raise ValidationError("Not an id: 24 hexadecimal digits.")
        return ObjectId(text)


# --- requests -------------------------------------------------------------------------


class DeviceListArgs(Schema):
    """A page of the device list, most recently seen first; `q` searches ids and names."""

    q = fields.String(validate=validate.Length(max=200), metadata={"description": "Part of an id or name"})
    cursor = SequenceCursor(metadata={"description": "next_cursor of the previous page"})
    limit = limit_field()


class TimeRange(Schema):
    """Messages on a topic filter, received within a time range."""

    topic = fields.String(validate=validate.Length(1, 1024), metadata={"description": "MQTT topic filter"})
    since = utc_time("Received at or after")
    until = utc_time("Received at or before")

    @validates_schema
    def validate_range(self, data, **kwargs):
        """The range must not end before it starts."""
        if data.get("since") and data.get("until") and data["until"] < data["since"]:
            raise ValidationError("until is before since", "until")


class MessageListArgs(TimeRange):
    """A page of a device's messages, newest first, with the same filters as its page."""

    cursor = SequenceCursor(metadata={"description": "next_cursor of the previous page"})
    limit = limit_field()


class ExportArgs(TimeRange):
    """Which messages an export holds (oldest first) and in which format."""

    format = fields.String(load_default="csv", validate=validate.OneOf(list(FORMATS)))


class TelemetryArgs(Schema):
    """Which series of a device to chart, over which time range, in how many buckets at most."""

    series = fields.List(
        fields.String(validate=validate.Length(1, 1024)),
        validate=validate.Length(max=MAX_CHART_SERIES),
        load_default=list,
        metadata={"description": "Series names (repeat the parameter); the recent ones when none"},
    )
    since = utc_time("From (default: the device's first message)")
    until = utc_time("Until (default: now)")
    points = fields.Integer(
        load_default=POINTS_DEFAULT,
        validate=validate.Range(1, POINTS_MAX),
        metadata={"description": "Buckets per series at most"},
    )
    format = fields.String(load_default="json", validate=validate.OneOf(["json", "csv"]))

    @validates_schema
    def validate_range(self, data, **kwargs):
        """The range must not end before or where it starts."""
        if data.get("since") and data.get("until") and data["until"] <= data["since"]:
            raise ValidationError("until must be after since", "until")


class IdPageArgs(Schema):
    """A page of a list newest first, below an id."""

    cursor = ObjectIdString(metadata={"description": "next_cursor of the previous page"})
    limit = limit_field()


class RolloutListArgs(IdPageArgs):
    """Rollouts, newest first, of every image or of one."""

    firmware_id = ObjectIdString(metadata={"description": "Only the rollouts of this image"})


class RolloutJobArgs(Schema):
    """A page of a rollout's jobs by device id."""

    cursor = fields.String(validate=validate.Length(1, MAX_DEVICE_ID_LENGTH))
    limit = limit_field(100)


class RolloutCreate(Schema):
    """A rollout: an image, its devices (a list, all, or all on a version), waves and limits."""

    firmware_id = ObjectIdString(required=True)
    devices = fields.List(
        fields.String(validate=validate.Length(1, MAX_DEVICE_ID_LENGTH)), validate=validate.Length(1, 100_000)
    )
    all_devices = fields.Boolean(load_default=False)
    from_version = fields.String(validate=validate.Length(1, 100))
    waves = fields.List(fields.Integer(), load_default=lambda: [100], metadata={"example": [10, 50, 100]})
    failure_threshold = fields.Float(
        load_default=DEFAULT_FAILURE_THRESHOLD, validate=validate.Range(0, 1, min_inclusive=False)
    )
    retry_limit = fields.Integer(load_default=DEFAULT_RETRY_LIMIT, validate=validate.Range(0, MAX_RETRIES))
    step_timeout = fields.Integer(
        load_default=DEFAULT_STEP_TIMEOUT, validate=validate.Range(1, MAX_STEP_TIMEOUT)
    )

    @validates_schema
    def validate_choice(self, data, **kwargs):
        """Exactly one way of naming the devices; waves that increase to 100."""
        chosen = [name for name in ("devices", "from_version") if data.get(name)] + (
            ["all_devices"] if data.get("all_devices") else []
        )
        if len(chosen) != 1:
            raise ValidationError("give exactly one of devices, all_devices or from_version")
        try:
            check_waves(data["waves"])
        except RolloutError as exc:
            raise ValidationError(str(exc), "waves") from exc


# --- responses ------------------------------------------------------------------------


def payload_base64(doc):
    """A message's payload in base64 when it is not text (text goes out as text), else None."""
    encoding, text = payload_text(doc)
    return text if encoding == "base64" else None


class Page(Schema):
    """A page of a list: pass next_cursor as `cursor` for the next page, until it is null."""

    next_cursor = nullable(fields.String)


class DeviceOut(Schema):
    """A device as the list and its page show it."""

    device_id = fields.String(required=True)
    name = nullable(fields.String)
    online = fields.Boolean(dump_default=False)
    message_count = fields.Integer(dump_default=0)
    last_seen_at = nullable(fields.DateTime)
    created_at = nullable(fields.DateTime)
    fw_version = nullable(fields.String)


class DevicePage(Page):
    """A page of devices; follow next_cursor until it is null (a search may return fewer than limit)."""

    items = fields.List(fields.Nested(DeviceOut), required=True)


class SeriesOut(Schema):
    """One series: its name and its buckets, oldest first, as [start, min, max, mean, count].

    `start` is the bucket's start in seconds since 1970 (UTC); buckets without a value
    (the device was silent) are left out, so a gap in the times is a gap in the data.
    """

    name = fields.String(required=True)
    points = fields.List(fields.List(fields.Float()), required=True)


class ChartOut(Schema):
    """A device's series over a time range, in buckets `bucket_seconds` wide."""

    device_id = fields.String(required=True)
    since = fields.String(required=True)
    until = fields.String(required=True)
    bucket_seconds = fields.Float(required=True)
    source = fields.String(
        required=True,
        validate=validate.OneOf(["messages", "minutes", "hours", "days"]),
        metadata={"description": "What the buckets were made from: the messages, or rollups"},
    )
    series = fields.List(fields.Nested(SeriesOut), required=True)


class MessageOut(Schema):
    """One stored message: its text when it is text (JSON also parsed in `data`), else base64 bytes."""

    id = fields.String(attribute="_id", required=True)
    seq = fields.Integer(required=True)
    topic = fields.String(required=True)
    direction = fields.String(dump_default="in", validate=validate.OneOf(DIRECTIONS))
    qos = fields.Integer(dump_default=0)
    retain = fields.Boolean(dump_default=False)
    received_at = fields.DateTime(required=True)
    kind = nullable(fields.String, validate=validate.OneOf(KINDS))
    size = nullable(fields.Integer)
    truncated = fields.Boolean(dump_default=False)
    raw_reason = nullable(fields.String)
    text = nullable(fields.String)
    data = fields.Raw(allow_none=True, dump_default=None, metadata={"description": "Parsed JSON payload"})
    payload_base64 = fields.Function(
        payload_base64, allow_none=True, metadata={"type": "string", "description": "Bytes that are not text"}
    )


class MessagePage(Page):
    """A page of messages, newest first; follow next_cursor until it is null.

    A filtered page may hold fewer than `limit` messages when the filter looked through
    its read budget; `searched_to` then says how far back it looked.
    """

    items = fields.List(fields.Nested(MessageOut), required=True)
    searched_to = nullable(fields.DateTime)


class FirmwareOut(Schema):
    """A firmware image (its bytes are downloaded by devices only)."""

    id = fields.String(attribute="pk", required=True)
    title = fields.String(required=True)
    version = fields.String(required=True)
    size = fields.Integer(required=True)
    sha256 = fields.String(required=True)
    notes = nullable(fields.String)
    created_at = nullable(fields.DateTime)
    created_by = nullable(fields.String)


class FirmwarePage(Page):
    """A page of images, newest first."""

    items = fields.List(fields.Nested(FirmwareOut), required=True)


class WaveOut(Schema):
    """One wave: its share, how many jobs it holds, and how many have finished or failed."""

    index = fields.Integer()
    percent = fields.Integer()
    size = fields.Integer()
    done = fields.Integer()
    failed = fields.Integer()


class RolloutOut(Schema):
    """A rollout and its settings."""

    id = fields.String(attribute="pk", required=True)
    firmware_id = fields.String(required=True)
    state = fields.String(validate=validate.OneOf(ROLLOUT_STATES))
    current_wave = fields.Integer()
    waves = fields.List(fields.Integer())
    device_count = fields.Integer()
    failure_threshold = fields.Float()
    retry_limit = fields.Integer()
    step_timeout = fields.Integer()
    created_at = nullable(fields.DateTime)
    created_by = nullable(fields.String)
    updated_at = nullable(fields.DateTime)


class RolloutDetail(RolloutOut):
    """A rollout with its jobs counted per state and per wave."""

    counts = fields.Dict(keys=fields.String(validate=validate.OneOf(JOB_STATES)), values=fields.Integer())
    wave_progress = fields.List(fields.Nested(WaveOut))


class RolloutPage(Page):
    """A page of rollouts, newest first."""

    items = fields.List(fields.Nested(RolloutOut), required=True)


class JobOut(Schema):
    """One device's update within a rollout."""

    id = fields.String(attribute="pk", required=True)
    rollout_id = fields.String(required=True)
    firmware_id = fields.String(required=True)
    title = fields.String()
    version = fields.String()
    device_id = fields.String(required=True)
    wave = fields.Integer()
    state = fields.String(validate=validate.OneOf(JOB_STATES))
    attempts = fields.Integer()
    progress = nullable(fields.Integer)
    error = nullable(fields.String)
    updated_at = nullable(fields.DateTime)


class JobEvent(Schema):
    """One step of a job: the state it reached, when, and the device's report that moved it."""

    state = fields.String()
    at = nullable(fields.DateTime)
    report = fields.Raw(allow_none=True, dump_default=None)
    note = nullable(fields.String)


class JobDetail(JobOut):
    """A job with every step it went through."""

    history = fields.List(fields.Nested(JobEvent))


class JobPage(Page):
    """A page of jobs."""

    items = fields.List(fields.Nested(JobOut), required=True)
