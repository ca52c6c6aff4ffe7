"""Exporting a device's messages as CSV or NDJSON, streamed in constant memory whatever the history's size.

Messages go out oldest first, read upward by ranges of their numbers (`seq`), each range
through a cursor that holds at most READ_BATCH documents at a time: memory stays that of
one batch and one output chunk, whether the device has a hundred messages or ten million.
"""

import base64
import csv
import io
import json
import re

from carweb.bridge.topics import topic_filter_regex
from carweb.history import ASCENDING, seq_bounds
from carweb.models import Message

FORMATS = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson"}
# Every export row, CSV and NDJSON alike: the payload is its UTF-8 text when it is text
# (JSON included), else base64 of its bytes, as `encoding` says.
FIELDS = ("seq", "received_at", "topic", "direction", "qos", "retain", "kind", "size", "truncated")
COLUMNS = (*FIELDS, "encoding", "payload")
RANGE = 2000  # message numbers per query
# Documents per cursor batch: a message may hold 256 KiB of payload and as much text, so
# 40 of them bound a batch near 20 MiB; small messages still come 40 per round trip.
READ_BATCH = 40
CHUNK = 64 * 1024  # bytes of output gathered before they are sent
SKIPPED_FIELDS = {"data": 0, "msg_id": 0, "redelivered": 0}  # the payload's text says it all


def export_record(doc):
    """One stored message as an export row (a dict in COLUMNS order)."""
    record = {name: doc.get(name) for name in FIELDS}
    record["received_at"] = doc["received_at"].isoformat().replace("+00:00", "Z")
    record["direction"] = record["direction"] or "in"
    record["qos"] = record["qos"] or 0
    record["retain"] = bool(record["retain"])
    record["truncated"] = bool(record["truncated"])
    record["encoding"], record["payload"] = payload_text(doc)
    return record


def payload_text(doc):
    """(encoding, text) of a stored payload: ("utf-8", its text) when it is text, else ("base64", its bytes)."""
    if doc.get("text") is not None:
        return "utf-8", doc["text"]
    return "base64", base64.b64encode(bytes(doc.get("payload") or b"")).decode("ascii")


def export_messages(device, since=None, until=None, topic=None, known_seq=0):
    """The device's stored messages received within [since, until] on `topic` (a filter), oldest first."""
    low, high = seq_bounds(device, since, until, known_seq)
    matches = re.compile(topic_filter_regex(topic)).match if topic else None
    collection = Message._get_collection()
    while low < high:
        top = min(low + RANGE, high)
        query = {"device_id": device.device_id, "seq": {"$gt": low, "$lte": top}}
        for doc in collection.find(query, SKIPPED_FIELDS, sort=ASCENDING, batch_size=READ_BATCH):
            if matches is None or matches(doc["topic"]):
                yield doc
        low = top


def ndjson_lines(docs):
    """Export rows as JSON lines."""
    for doc in docs:
        yield json.dumps(export_record(doc), ensure_ascii=False) + "\n"


def csv_lines(docs):
    """Export rows as CSV (RFC 4180, a header first)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for doc in docs:
        writer.writerow(export_record(doc).values())
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def chunked(lines):
    """Lines gathered into UTF-8 chunks of about CHUNK bytes.

    A database error midway raises out of the stream: the server logs it and closes the
    connection without the final chunk, so the client sees an incomplete transfer, never
    a partial file that looks whole.
    """
    parts, size = [], 0
    for line in lines:
        data = line.encode("utf-8")
        parts.append(data)
        size += len(data)
        if size >= CHUNK:
            yield b"".join(parts)
            parts, size = [], 0
    if parts:
        yield b"".join(parts)


def export_stream(fmt, docs):
    """The body of an export in format `fmt` (a key of FORMATS)."""
    return chunked(csv_lines(docs) if fmt == "csv" else ndjson_lines(docs))
