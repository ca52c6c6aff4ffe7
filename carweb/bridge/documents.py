"""Turn MQTT messages into the documents stored in `messages` (no database access)."""

import logging

from bson import ObjectId

from carweb import metrics
from carweb.bridge.topics import TopicError, device_id_of, direction_of
from carweb.payloads import decode_payload

log = logging.getLogger(__name__)
MAX_MSG_ID_LENGTH = 200


def message_id_of(properties, data):
    """The device's own message id: MQTT 5 user property `msg-id`, else a JSON field `msg_id`."""
    for key, value in getattr(properties, "UserProperty", None) or []:
        if key == "msg-id" and value:
            return value[:MAX_MSG_ID_LENGTH]
    if isinstance(data, dict):
        value = data.get("msg_id")
        if isinstance(value, (str, int)) and not isinstance(value, bool) and value != "":
            return str(value)[:MAX_MSG_ID_LENGTH]
    return None


def message_document(msg, received_at, max_payload):
    """Build the document stored for one paho message; raise TopicError for an unusable topic."""
    topic = msg.topic
    doc = {
        "_id": ObjectId(),
        "device_id": device_id_of(topic),
        "topic": topic,
        "qos": msg.qos,
        "retain": bool(msg.retain),
        "direction": direction_of(topic),
        "received_at": received_at,
    }
    doc.update(decode_payload(msg.payload, max_payload))
    msg_id = message_id_of(getattr(msg, "properties", None), doc.get("data"))
    if msg_id is not None:
        doc["msg_id"] = msg_id
    if getattr(msg, "dup", False):
        doc["redelivered"] = True
    return doc


def document_or_none(msg, received_at, max_payload):
    """The document for one message, or None (counted and logged) when it cannot be stored."""
    try:
        doc = message_document(msg, received_at, max_payload)
    except (TopicError, UnicodeDecodeError) as exc:
        reason = str(exc) if isinstance(exc, TopicError) else "topic not UTF-8"
        metrics.dropped.labels(reason=reason).inc()
        log.warning("dropped message on %r: %s", getattr(msg, "_topic", b"")[:200], reason)
        return None
    if doc["truncated"]:
        metrics.truncated.inc()
        log.warning("payload of %d bytes on %s stored truncated", doc["size"], doc["topic"])
    return doc


def build_documents(arrivals, max_payload):
    """Documents for (paho message, arrival time) pairs, leaving out those that cannot be stored."""
    docs = (document_or_none(msg, received_at, max_payload) for msg, received_at in arrivals)
    return [doc for doc in docs if doc is not None]
