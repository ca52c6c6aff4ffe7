"""Delivery: update and cancel commands to devices, signed download links, and MQTT chunks."""

import logging
import time
from collections import OrderedDict

from itsdangerous import BadData, URLSafeTimedSerializer

from carweb import metrics
from carweb.bridge.publisher import publish
from carweb.models import Firmware, UpdateJob
from carweb.models.firmware import TERMINAL_STATES
from carweb.ota.jobs import mark_sent
from carweb.ota.protocol import (
    ProtocolError,
    cancel_command,
    cancel_topic,
    chunk_topic,
    parse_chunk_request,
    parse_job_id,
    update_command,
    update_topic,
)
from carweb.ota.store import read_chunk

log = logging.getLogger(__name__)
TOKEN_SALT = "carweb-firmware-download"
# A device gets the same chunk at most once in this many seconds; it may ask again after.
CHUNK_REPEAT_SECONDS = 5
JOB_MEMORY_SECONDS = 2


class InvalidToken(ValueError):
    """A download token that is forged, altered, expired or names no downloadable job."""


def _serializer(config):
    """Signs download tokens with the app's SECRET_KEY."""
    return URLSafeTimedSerializer(config["SECRET_KEY"], salt=TOKEN_SALT)


def download_token(config, job_id, device_id):
    """A token that lets one device download one job's image until CARWEB_DOWNLOAD_TTL has passed."""
    return _serializer(config).dumps({"job": str(job_id), "device": device_id})


def signed_download_url(config, job_id, device_id):
    """The absolute download URL of a job's image, and when it expires (Unix seconds)."""
    token = download_token(config, job_id, device_id)
    expires = int(time.time()) + config["CARWEB_DOWNLOAD_TTL"]
    return f"{config['CARWEB_PUBLIC_URL']}/firmware/download/{token}", expires


def downloadable_firmware(config, token):
    """The Firmware a valid token grants; InvalidToken for a bad token or a job that is missing or ended.

    A job ends UPDATED, FAILED, REJECTED, TIMED_OUT or CANCELED: from then on its token
    grants nothing, though its signature lives for CARWEB_DOWNLOAD_TTL.
    """
    try:
        claims = _serializer(config).loads(token, max_age=config["CARWEB_DOWNLOAD_TTL"])
        job_id = parse_job_id(claims.get("job"))
    except (BadData, ProtocolError, AttributeError) as exc:
        raise InvalidToken("bad or expired download token") from exc
    job = UpdateJob.objects(pk=job_id).only("device_id", "state", "firmware_id").first()
    if job is None or job.device_id != claims.get("device") or job.state in TERMINAL_STATES:
        raise InvalidToken("the token names no downloadable job")
    firmware = Firmware.objects(pk=job.firmware_id).first()
    if firmware is None:
        raise InvalidToken("the firmware is gone")
    return firmware


def publish_commands(app, messages):
    """Publish commands; a broker that does not take them is logged (the jobs time out and retry)."""
    if not messages:
        return True
    try:
        publish(app, messages)
        return True
    except Exception as exc:  # noqa: BLE001 - jobs are already SENT: the timeout sweep retries them
        log.warning("publishing %d firmware commands failed: %s", len(messages), exc)
        return False


def send_jobs(app, rollout, firmware, jobs):
    """Mark jobs SENT (one more attempt) and publish their update commands; return the sent jobs."""
    sent, messages = [], []
    for job in jobs:
        updated = mark_sent(job, rollout.step_timeout)
        if updated is None:
            continue
        url, expires = signed_download_url(app.config, updated.pk, updated.device_id)
        command = update_command(updated.pk, firmware, url, expires, app.config["CARWEB_OTA_CHUNK_SIZE"])
        messages.append((update_topic(updated.device_id), command, 1))
        sent.append(updated)
    publish_commands(app, messages)
    return sent


def send_cancels(app, jobs):
    """Tell the devices of these jobs to stop."""
    publish_commands(app, [(cancel_topic(job.device_id), cancel_command(job.pk), 1) for job in jobs])


class ChunkLimiter:
    """Chunks answered lately, per device, job and index: a repeat within the window is refused.

    A device looping on chunk requests would otherwise make each 60-byte request cost a
    GridFS read and a 64 KiB publish. Job lookups are remembered for a moment too.
    """

    def __init__(self, window=CHUNK_REPEAT_SECONDS, clock=time.monotonic):
        self.window = window
        self.clock = clock
        self._answered = OrderedDict()
        self._jobs = OrderedDict()

    def first_time(self, device_id, job_id, index):
        """True, and remembered, unless this chunk went to this device within the window."""
        now = self.clock()
        self._forget_before(self._answered, now - self.window)
        key = (device_id, job_id, index)
        if key in self._answered:
            return False
        self._answered[key] = (now, None)
        return True

    def job(self, job_id, lookup):
        """The job (or None), from `lookup(job_id)` at most once per JOB_MEMORY_SECONDS."""
        now = self.clock()
        self._forget_before(self._jobs, now - JOB_MEMORY_SECONDS)
        if job_id not in self._jobs:
            self._jobs[job_id] = (now, lookup(job_id))
        return self._jobs[job_id][1]

    @staticmethod
    def _forget_before(entries, moment):
        """Drop (time, value) entries older than `moment` (they are kept oldest first)."""
        while entries and next(iter(entries.values()))[0] < moment:
            entries.popitem(last=False)


def chunk_limiter(app):
    """The process's chunk limiter (one per app, made on first use)."""
    return app.extensions.setdefault("carweb.chunk_limiter", ChunkLimiter())


def answer_chunk_requests(app, docs):
    """Bridge handler for `+/firmware/chunk/request`: publish each requested chunk (empty past the end)."""
    messages, images, limiter = [], {}, chunk_limiter(app)
    chunk_size = app.config["CARWEB_OTA_CHUNK_SIZE"]
    for doc in docs:
        request = _open_chunk_request(doc, limiter)
        if request is None:
            continue
        job, index = request
        if job.firmware_id not in images:
            images[job.firmware_id] = Firmware.objects(pk=job.firmware_id).first()
        firmware = images[job.firmware_id]
        if firmware is None or index > -(-firmware.size // chunk_size):
            _refuse(doc, job.pk, "index past the end")
            continue
        data = read_chunk(firmware, index, chunk_size)
        messages.append((chunk_topic(doc["device_id"], job.pk, index), data, 1))
    publish_commands(app, messages)


def _open_chunk_request(doc, limiter):
    """(job, index) of a request to answer now, or None (logged and counted) when it is refused."""
    try:
        job_id, index = parse_chunk_request(doc.get("data"))
    except ProtocolError as exc:
        return _refuse(doc, None, str(exc))
    job = limiter.job(job_id, _chunk_job)
    if job is None or job.device_id != doc["device_id"] or job.state in TERMINAL_STATES:
        return _refuse(doc, job_id, "no such open job")
    if not limiter.first_time(doc["device_id"], job_id, index):
        return _refuse(doc, job_id, f"chunk answered less than {CHUNK_REPEAT_SECONDS} s ago")
    return job, index


def _chunk_job(job_id):
    """The fields of a job a chunk request needs."""
    return UpdateJob.objects(pk=job_id).only("device_id", "state", "firmware_id").first()


def _refuse(doc, job_id, reason):
    """Count and log a refused chunk request; None."""
    metrics.chunk_requests_refused.inc()
    log.info("chunk request of %s for job %s refused: %s", doc["device_id"], job_id, reason)
    return None
