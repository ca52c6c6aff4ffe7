"""Payloads and topics of the firmware update protocol (contract); pure functions, no I/O."""

import json
from dataclasses import dataclass

from bson import ObjectId
from bson.errors import InvalidId

REPORTED_STATES = ("DOWNLOADING", "DOWNLOADED", "VERIFIED", "UPDATING", "UPDATED", "FAILED", "REJECTED")
STATUS_FILTER = "+/firmware/status"
CHUNK_REQUEST_FILTER = "+/firmware/chunk/request"
MAX_ERROR_LENGTH = 500
MAX_VERSION_LENGTH = 100
MAX_CHUNK_INDEX = 10**7


class ProtocolError(ValueError):
    """A payload that does not follow the contract; the message says why."""


@dataclass(frozen=True)
class StatusReport:
    """A device's report on one job: `{"job", "state", "progress"?, "error"?, "version"?}`."""

    job: ObjectId
    state: str
    progress: int | None = None
    error: str | None = None
    version: str | None = None

    def as_dict(self):
        """The report as stored in a job's history (only the fields the device sent)."""
        fields = {"job": str(self.job), "state": self.state}
        for name in ("progress", "error", "version"):
            if getattr(self, name) is not None:
                fields[name] = getattr(self, name)
        return fields


def update_topic(device_id):
    """Where a device gets update commands."""
    return f"{device_id}/firmware/update"


def cancel_topic(device_id):
    """Where a device gets cancel commands."""
    return f"{device_id}/firmware/cancel"


def chunk_topic(device_id, job_id, index):
    """Where carweb answers a device's request for chunk `index` of a job's image."""
    return f"{device_id}/firmware/chunk/{job_id}/{index}"


def update_command(job_id, firmware, url, expires, chunk_size):
    """The update command's JSON bytes; `expires` is when `url` stops working (Unix seconds)."""
    command = {
        "job": str(job_id),
        "title": firmware.title,
        "version": firmware.version,
        "size": firmware.size,
        "sha256": firmware.sha256,
        "url": url,
        "expires": int(expires),
        "chunk_size": chunk_size,
    }
    if firmware.signature:
        command.update(signature=firmware.signature, key_id=firmware.key_id)
    return json.dumps(command).encode()


def cancel_command(job_id):
    """The cancel command's JSON bytes."""
    return json.dumps({"job": str(job_id)}).encode()


def parse_job_id(value):
    """A job id as carweb issues them (24 hex digits), or ProtocolError."""
    if not isinstance(value, str):
        raise ProtocolError("job must be a string")
    try:
        return ObjectId(value)
    except InvalidId as exc:
        raise ProtocolError("job is not a job id carweb issued") from exc


def _optional_text(data, name, limit):
    """A string field cut to `limit`, None when absent; ProtocolError for another type."""
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"{name} must be a string")
    return value[:limit]


def parse_status_report(data):
    """Validate a status report's parsed JSON and return a StatusReport, or raise ProtocolError."""
    if not isinstance(data, dict):
        raise ProtocolError("a status report is a JSON object")
    job = parse_job_id(data.get("job"))
    state = data.get("state")
    if state not in REPORTED_STATES:
        raise ProtocolError(f"state must be one of {' '.join(REPORTED_STATES)}")
    progress = data.get("progress")
    if progress is not None and (
        isinstance(progress, bool) or not isinstance(progress, int | float) or not 0 <= progress <= 100
    ):
        raise ProtocolError("progress must be a number from 0 to 100")
    return StatusReport(
        job=job,
        state=state,
        progress=None if progress is None else int(progress),
        error=_optional_text(data, "error", MAX_ERROR_LENGTH),
        version=_optional_text(data, "version", MAX_VERSION_LENGTH),
    )


def parse_chunk_request(data):
    """Validate a chunk request `{"job", "index"}`; return (job id, index) or raise ProtocolError."""
    if not isinstance(data, dict):
        raise ProtocolError("a chunk request is a JSON object")
    index = data.get("index")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= MAX_CHUNK_INDEX:
        raise ProtocolError("index must be a whole number from 0")
    return parse_job_id(data.get("job")), index
