"""Decode MQTT payloads for storage and format them for display (pure functions)."""

import json

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_JSON_DEPTH = 32
TEXT_SHOWN = 8192
BINARY_SHOWN = 1024


def decode_payload(raw, max_size):
    """Split raw bytes into the fields a Message stores: payload, text, data, kind, size, truncated."""
    size = len(raw)
    truncated = size > max_size
    payload = bytes(raw[:max_size]) if truncated else bytes(raw)
    fields = {"payload": payload, "size": size, "truncated": truncated, "kind": "binary"}
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return fields
    if "\x00" in text:
        return fields
    fields.update(text=text, kind="text")
    if truncated:
        return fields
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return fields
    fields["kind"] = "json"
    if bson_storable(value):
        fields["data"] = value
    return fields


def bson_storable(value, depth=0):
    """Tell whether a parsed JSON value can be stored in MongoDB as it is."""
    if depth > MAX_JSON_DEPTH:
        return False
    if isinstance(value, bool) or value is None or isinstance(value, (float, str)):
        return True
    if isinstance(value, int):
        return INT64_MIN <= value <= INT64_MAX
    if isinstance(value, list):
        return all(bson_storable(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(_storable_key(key) and bson_storable(item, depth + 1) for key, item in value.items())
    return False


def _storable_key(key):
    """MongoDB field names may not start with '$' nor contain '.' or NUL."""
    return not key.startswith("$") and "." not in key and "\x00" not in key


def payload_view(kind, payload, text):
    """Return (kind, body, hidden_bytes) for showing a payload; the caller escapes body."""
    if kind == "json":
        try:
            body = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except (ValueError, RecursionError):
            body = text
        return _cut("json", body, TEXT_SHOWN)
    if kind == "text":
        return _cut("text", text or "", TEXT_SHOWN)
    payload = payload or b""
    shown = payload[:BINARY_SHOWN]
    return "binary", shown.hex(" "), len(payload) - len(shown)


def _cut(kind, body, limit):
    """Cut a long text for display, saying how many characters were left out."""
    if len(body) <= limit:
        return kind, body, 0
    return kind, body[:limit], len(body) - limit
