"""Payload decoding for storage and display."""

import json

from carweb.payloads import BINARY_SHOWN, TEXT_SHOWN, bson_storable, decode_payload, payload_view


def test_json_payload_keeps_bytes_text_and_parsed_value():
    """A JSON payload is stored three ways: exact bytes, text, parsed value."""
    raw = b'{"speed": 42.5, "ok": true}'
    fields = decode_payload(raw, 1024)
    assert fields["payload"] == raw
    assert fields["text"] == raw.decode()
    assert fields["data"] == {"speed": 42.5, "ok": True}
    assert fields["kind"] == "json"
    assert fields["size"] == len(raw) and fields["truncated"] is False


def test_plain_text_payload_has_text_and_no_data():
    """UTF-8 that is not JSON is kept as text only."""
    fields = decode_payload("online ✓".encode(), 1024)
    assert fields["kind"] == "text" and fields["text"] == "online ✓" and "data" not in fields


def test_non_utf8_payload_is_binary_with_exact_bytes():
    """Bytes that are not UTF-8 are stored exactly and have no text."""
    raw = bytes([0xFF, 0xFE, 0x00, 0x80])
    fields = decode_payload(raw, 1024)
    assert fields["kind"] == "binary" and fields["payload"] == raw and "text" not in fields


def test_oversized_payload_is_cut_and_marked_truncated():
    """A payload over the limit is stored cut to the limit, with its real size."""
    raw = b"x" * 5000
    fields = decode_payload(raw, 1000)
    assert fields["payload"] == b"x" * 1000
    assert fields["truncated"] is True and fields["size"] == 5000


def test_truncated_json_is_not_parsed():
    """Half a JSON document is text, not a parsed value."""
    raw = json.dumps({"a": "y" * 100}).encode()
    fields = decode_payload(raw, 20)
    assert fields["kind"] == "text" and "data" not in fields


def test_json_that_mongodb_cannot_store_keeps_text_only():
    """Keys with '$' or '.', and integers beyond int64, are not stored as parsed values."""
    for raw in (b'{"$where": 1}', b'{"a.b": 1}', b'{"n": 123456789012345678901234567890}'):
        fields = decode_payload(raw, 1024)
        assert fields["kind"] == "json" and "data" not in fields, raw


def test_bson_storable_accepts_nested_values_and_refuses_deep_ones():
    """Ordinary nesting is fine; absurd nesting is refused."""
    assert bson_storable({"a": [1, 2.5, None, {"b": "c"}], "t": True})
    deep = current = {}
    for _ in range(100):
        current["x"] = {}
        current = current["x"]
    assert not bson_storable(deep)


def test_payload_view_pretty_prints_json():
    """JSON is shown indented."""
    kind, body, hidden = payload_view("json", b"", '{"a":1,"b":[1,2]}')
    assert kind == "json" and body == '{\n  "a": 1,\n  "b": [\n    1,\n    2\n  ]\n}' and hidden == 0


def test_payload_view_shows_binary_as_hex_and_cuts_long_bodies():
    """Binary shows as hex; long bodies say how much is not shown."""
    assert payload_view("binary", b"\x00\xff", None) == ("binary", "00 ff", 0)
    kind, body, hidden = payload_view("binary", b"\x01" * (BINARY_SHOWN + 10), None)
    assert hidden == 10 and len(body.split()) == BINARY_SHOWN
    kind, body, hidden = payload_view("text", None, "a" * (TEXT_SHOWN + 5))
    assert len(body) == TEXT_SHOWN and hidden == 5
