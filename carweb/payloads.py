"""Decode MQTT payloads for storage and format them for display (pure functions)."""

import json
import re

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_JSON_DEPTH = 32
TEXT_SHOWN = 8192
BINARY_SHOWN = 1024
# A JSON \u escape in the surrogate range: the only way decoded JSON can hold a lone
# surrogate, which no UTF-8 encoder (so no BSON encoder) accepts. Strict UTF-8 decoding
# of the payload itself never yields one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def decode_payload(raw, max_size):
    """Split raw bytes into the fields a Message stores: payload, text, data, kind, size, truncated.

    JSON that MongoDB cannot hold as a value keeps its text and says why in `raw_reason`.
    """
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
    problem = json_storage_problem(value, text)
    if problem is None:
        fields["data"] = value
    else:
        fields["raw_reason"] = f"JSON kept as text only: {problem}"
    return fields


def json_storage_problem(value, text):
    """Why a parsed JSON value cannot be stored in MongoDB as it is, or None when it can."""
    if not bson_storable(value):
        return _structural_problem(value)
    if _SURROGATE_ESCAPE.search(text) and not _utf8_encodable(value):
        return "a string or key holds a lone surrogate escape"
    return None


def _utf8_encodable(value):
    """Whether every string and key of a parsed JSON value encodes as UTF-8."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _structural_problem(value, depth=0):
    """The first reason `bson_storable` refused a value, in words (slow path, refused values only)."""
    if depth >= MAX_JSON_DEPTH and isinstance(value, dict | list):
        return f"nested deeper than {MAX_JSON_DEPTH} levels"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and (key[:1] == "$" or "." in key or "\x00" in key):
            return "a key starts with '$' or holds '.' or NUL"
        problem = _structural_problem(item, depth + 1)
        if problem:
            return problem
    if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
        return "an integer does not fit in 64 bits"
    return None


def bson_storable(value, depth=0):
    """Tell whether a parsed JSON value's structure can be stored in MongoDB as it is.

    Written as plain loops with a fast path for scalars: it runs on every JSON payload in
    the bridge, where a generator-based walk cost 12 % of the bridge's CPU.
    """
    kind = type(value)
    if kind is dict:
        if depth >= MAX_JSON_DEPTH:
            return False
        for key, item in value.items():
            if key[:1] == "$" or "." in key or "\x00" in key or not _scalar_or_storable(item, depth):
                return False
        return True
    if kind is list:
        if depth >= MAX_JSON_DEPTH:
            return False
        return all(_scalar_or_storable(item, depth) for item in value)
    return _scalar_or_storable(value, depth - 1)


def _scalar_or_storable(item, depth):
    """A scalar JSON value that fits BSON, or a container that is storable one level down."""
    kind = type(item)
    if kind is str or kind is float or kind is bool or item is None:
        return True
    if kind is int:
        return INT64_MIN <= item <= INT64_MAX
    return (kind is dict or kind is list) and bson_storable(item, depth + 1)


def payload_view(kind, payload, text):
    """Return (kind, body, hidden_bytes) for showing a payload; the caller escapes body."""
    if kind == "json":
        return _cut("json", _pretty_json(text or ""), TEXT_SHOWN)
    if kind == "text":
        return _cut("text", text or "", TEXT_SHOWN)
    payload = payload or b""
    shown = payload[:BINARY_SHOWN]
    return "binary", shown.hex(" "), len(payload) - len(shown)


def _pretty_json(text):
    """JSON text indented; the text as it came when re-encoding would not give valid UTF-8."""
    try:
        body = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        body.encode("utf-8")
    except (ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        return text
    return body


def _cut(kind, body, limit):
    """Cut a long text for display, saying how many characters were left out."""
    if len(body) <= limit:
        return kind, body, 0
    return kind, body[:limit], len(body) - limit
