"""MongoEngine documents; collection names are a contract operators query."""

from carweb.models.audit import AuditEntry
from carweb.models.device import Device
from carweb.models.firmware import Firmware, Rollout, UpdateJob
from carweb.models.message import Message
from carweb.models.state import IngestState
from carweb.models.telemetry import Rollup
from carweb.models.token import ApiToken, DeviceToken
from carweb.models.user import LoginSession, User

ALL_DOCUMENTS = (
    User,
    LoginSession,
    Device,
    Message,
    Firmware,
    Rollout,
    UpdateJob,
    IngestState,
    AuditEntry,
    ApiToken,
    DeviceToken,
    Rollup,
)


def ensure_indexes():
    """Create every index of every document once (called at start-up, not per request)."""
    for document in ALL_DOCUMENTS:
        document.ensure_indexes()


__all__ = [
    "Device",
    "Message",
    "User",
    "LoginSession",
    "Firmware",
    "Rollout",
    "UpdateJob",
    "IngestState",
    "AuditEntry",
    "ApiToken",
    "DeviceToken",
    "Rollup",
    "ALL_DOCUMENTS",
    "ensure_indexes",
]
