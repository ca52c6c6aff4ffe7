"""Turn MQTT messages into the documents stored in `messages` (no database access)."""

import logging

from bson import ObjectId

from carweb import metrics
from carweb.bridge.limits import RateLimitedLog
from carweb.bridge.topics import TopicError, device_id_of, direction_of, is_chunk_topic
from carweb.payloads import decode_payload

log = logging.getLogger(__name__)
MAX_MSG_ID_LENGTH = 200
CHUNK_NOTE = "firmware chunk sent by carweb: only its size is kept"
dropped_log = RateLimitedLog(log)


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
    if is_chunk_topic(topic):
        # Carweb's own 64 KiB answers to chunk requests: the image is in GridFS already.
        size = len(msg.payload)
        doc.update(payload=b"", size=size, truncated=size > 0, kind="binary", raw_reason=CHUNK_NOTE)
        return doc
    doc.update(decode_payload(msg.payload, max_payload))
    msg_id = message_id_of(getattr(msg, "properties", None), doc.get("data"))
    if msg_id is not None:
        doc["msg_id"] = msg_id
    if getattr(msg, "dup", False):
        doc["redelivered"] = True
    return doc


def document_or_none(msg, received_at, max_payload):
    """The document for one message, or None (counted and logged) when it cannot be stored.

    Never raises: whatever a message holds, the bridge goes on with the next one.
    """
    try:
        doc = message_document(msg, received_at, max_payload)
    except (TopicError, UnicodeDecodeError) as exc:
        reason = str(exc) if isinstance(exc, TopicError) else "topic not UTF-8"
        return _dropped(msg, reason)
    except Exception:  # noqa: BLE001 - a payload the decoder did not foresee: keep its bytes
        log.exception("decoding a message failed; storing its bytes")
        doc = _undecoded_document(msg, received_at, max_payload)
        if doc is None:
            return _dropped(msg, "not decodable")
    if doc["truncated"] and "raw_reason" not in doc:
        metrics.truncated.inc()
        log.warning("payload of %d bytes on %s stored truncated", doc["size"], doc["topic"])
    return doc


def _undecoded_document(msg, received_at, max_payload):
    """The document of a message whose payload could not be decoded: its bytes only."""
    try:
        payload = bytes(msg.payload)
        doc = {
            "_id": ObjectId(),
            "device_id": device_id_of(msg.topic),
            "topic": msg.topic,
            "qos": msg.qos,
            "retain": bool(msg.retain),
            "direction": direction_of(msg.topic),
            "received_at": received_at,
            "payload": payload[:max_payload],
            "size": len(payload),
            "truncated": len(payload) > max_payload,
            "kind": "binary",
            "raw_reason": "the payload could not be decoded",
        }
    except Exception:  # noqa: BLE001 - not even the topic and bytes can be read
        return None
    return doc


def _dropped(msg, reason):
    """Count and log (rate-limited) a message that cannot be stored; None."""
    metrics.dropped.labels(reason=reason).inc()
    dropped_log.warning(reason, "dropped message on %r: %s", getattr(msg, "_topic", b"")[:200], reason)
    return None


def build_documents(arrivals, max_payload):
    """Documents for (paho message, arrival time) pairs, leaving out those that cannot be stored."""
    docs = (document_or_none(msg, received_at, max_payload) for msg, received_at in arrivals)
    return [doc for doc in docs if doc is not None]
