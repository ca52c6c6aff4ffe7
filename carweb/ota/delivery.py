"""Delivery: update and cancel commands to devices, signed download links, and MQTT chunks."""

import logging
import time

from itsdangerous import BadData, URLSafeTimedSerializer

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
    """The Firmware a valid token grants; InvalidToken for a bad token or a canceled or missing job."""
    try:
        claims = _serializer(config).loads(token, max_age=config["CARWEB_DOWNLOAD_TTL"])
        job_id = parse_job_id(claims.get("job"))
    except (BadData, ProtocolError, AttributeError) as exc:
        raise InvalidToken("bad or expired download token") from exc
    job = UpdateJob.objects(pk=job_id).only("device_id", "state", "firmware_id").first()
    if job is None or job.device_id != claims.get("device") or job.state == "CANCELED":
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


def answer_chunk_requests(app, docs):
    """Bridge handler for `+/firmware/chunk/request`: publish each requested chunk (empty past the end)."""
    messages, images = [], {}
    chunk_size = app.config["CARWEB_OTA_CHUNK_SIZE"]
    for doc in docs:
        try:
            job_id, index = parse_chunk_request(doc.get("data"))
        except ProtocolError as exc:
            log.info("chunk request on %s ignored: %s", doc["topic"], exc)
            continue
        job = UpdateJob.objects(pk=job_id).only("device_id", "state", "firmware_id").first()
        if job is None or job.device_id != doc["device_id"] or job.state in TERMINAL_STATES:
            log.info("chunk request for job %s of %s ignored: no such open job", job_id, doc["device_id"])
            continue
        if job.firmware_id not in images:
            images[job.firmware_id] = Firmware.objects(pk=job.firmware_id).first()
        firmware = images[job.firmware_id]
        if firmware is None:
            continue
        data = read_chunk(firmware, index, chunk_size)
        messages.append((chunk_topic(doc["device_id"], job_id, index), data, 1))
    publish_commands(app, messages)
