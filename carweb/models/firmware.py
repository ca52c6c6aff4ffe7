"""Firmware images, rollouts that send one to many devices, and one update job per device."""

from mongoengine import (
    DateTimeField,
    DictField,
    Document,
    FloatField,
    IntField,
    ListField,
    ObjectIdField,
    StringField,
)

from carweb.models.user import utcnow

# Job states of the firmware update protocol (contract), in the order a job moves forward.
FORWARD_STATES = ("QUEUED", "SENT", "DOWNLOADING", "DOWNLOADED", "VERIFIED", "UPDATING", "UPDATED")
FAILURE_STATES = ("FAILED", "REJECTED", "TIMED_OUT")
JOB_STATES = FORWARD_STATES + FAILURE_STATES + ("CANCELED",)
TERMINAL_STATES = ("UPDATED",) + FAILURE_STATES + ("CANCELED",)
UNFINISHED_STATES = tuple(s for s in JOB_STATES if s not in TERMINAL_STATES)
ROLLOUT_STATES = ("RUNNING", "HALTED", "COMPLETED", "CANCELED")
# A rollout's settings when nobody chooses them (the model, the CLI and the form).
DEFAULT_FAILURE_THRESHOLD = 0.2
DEFAULT_RETRY_LIMIT = 2
DEFAULT_STEP_TIMEOUT = 600


class Firmware(Document):
    """An uploaded image: its bytes live in GridFS, its identity is title + version."""

    title = StringField(required=True, max_length=200)
    version = StringField(required=True, max_length=100)
    size = IntField(required=True, min_value=1)
    sha256 = StringField(required=True, min_length=64, max_length=64)
    file_id = ObjectIdField(required=True)
    notes = StringField(max_length=10000)
    created_at = DateTimeField(default=utcnow)
    created_by = StringField()
    # A detached Ed25519 signature of the build pipeline (carweb.ota.signing), forwarded to devices.
    signature = StringField()  # base64 of its 64 bytes
    key_id = StringField()

    meta = {
        "collection": "firmware",
        "auto_create_index": False,
        "indexes": [
            {"fields": ["title", "version"], "unique": True, "name": "title_version"},
            {"fields": ["-created_at"]},
        ],
    }

    @property
    def label(self):
        """`title version`, as operators name an image."""
        return f"{self.title} {self.version}"


class Rollout(Document):
    """One firmware sent to a set of devices in waves (cumulative percentages of the targets)."""

    firmware_id = ObjectIdField(required=True, db_field="firmware")
    targets = ListField(StringField(), required=True)
    device_count = IntField(required=True, min_value=1)
    waves = ListField(IntField(min_value=1, max_value=100), required=True)
    failure_threshold = FloatField(default=DEFAULT_FAILURE_THRESHOLD, min_value=0, max_value=1)
    retry_limit = IntField(default=DEFAULT_RETRY_LIMIT, min_value=0)
    step_timeout = IntField(default=DEFAULT_STEP_TIMEOUT, min_value=1)
    state = StringField(choices=ROLLOUT_STATES, default="RUNNING")
    current_wave = IntField(default=0)
    created_at = DateTimeField(default=utcnow)
    created_by = StringField()
    updated_at = DateTimeField(default=utcnow)

    meta = {
        "collection": "rollouts",
        "auto_create_index": False,
        "indexes": [{"fields": ["state"]}, {"fields": ["firmware_id", "-created_at"]}],
    }


class UpdateJob(Document):
    """One device's update within a rollout; `history` holds every transition with its report."""

    rollout_id = ObjectIdField(required=True, db_field="rollout")
    firmware_id = ObjectIdField(required=True, db_field="firmware")
    # The firmware's title and version, copied so a device's history needs no join.
    title = StringField(required=True)
    version = StringField(required=True)
    device_id = StringField(required=True)
    wave = IntField(required=True, min_value=0)
    state = StringField(choices=JOB_STATES, default="QUEUED")
    attempts = IntField(default=0)
    progress = IntField()
    error = StringField()
    # [{"state", "at", "report", "msg"}]: msg is the stored message that caused it, if any.
    history = ListField(DictField())
    updated_at = DateTimeField(default=utcnow)
    # Set while the job waits for a device report; absent otherwise (the timeout sweep's index).
    timeout_at = DateTimeField()

    meta = {
        "collection": "update_jobs",
        "auto_create_index": False,
        "indexes": [
            {"fields": ["rollout_id", "device_id"], "unique": True, "name": "rollout_device"},
            {"fields": ["rollout_id", "wave", "state"], "name": "rollout_wave"},
            {"fields": ["device_id", "-updated_at"], "name": "device_jobs"},
            {"fields": ["firmware_id", "state"], "name": "firmware_jobs"},
            {"fields": ["firmware_id", "-_id"], "name": "image_jobs"},  # an image's jobs, newest first
            {"fields": ["timeout_at"], "name": "timeout"},
        ],
    }
