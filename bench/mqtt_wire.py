"""MQTT 3.1.1 packets by hand, for a load generator that must cost little CPU (stdlib only)."""

CONNECT, CONNACK, PUBACK = 0x10, 0x20, 0x40
PINGREQ, DISCONNECT = b"\xc0\x00", b"\xe0\x00"
PUBLISH_QOS1 = b"\x32"
MAX_REMAINING_LENGTH = 268_435_455


def remaining_length_bytes(length):
    """MQTT's variable-length encoding of a packet's remaining length (1 to 4 bytes)."""
    if not 0 <= length <= MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length {length} out of range")
    encoded = bytearray()
    while True:
        length, digit = divmod(length, 128)
        encoded.append(digit | 0x80 if length else digit)
        if not length:
            return bytes(encoded)


def decode_remaining_length(buffer, offset):
    """(length, offset after it) of the remaining length at `offset`, or None while bytes are missing."""
    value = 0
    for position in range(4):
        if offset + position >= len(buffer):
            return None
        digit = buffer[offset + position]
        value |= (digit & 0x7F) << (7 * position)
        if not digit & 0x80:
            return value, offset + position + 1
    raise ValueError("remaining length longer than 4 bytes")


class PacketStream:
    """Cuts a TCP byte stream into MQTT packets, however the reads split or join them."""

    def __init__(self):
        self.buffer = bytearray()

    def feed(self, data):
        """Add received bytes; return the (first byte, body) of every packet now complete."""
        buffer = self.buffer
        buffer += data
        packets, offset = [], 0
        while (header := decode_remaining_length(buffer, offset + 1)) is not None:
            length, start = header
            if start + length > len(buffer):
                break
            packets.append((buffer[offset], bytes(buffer[start : start + length])))
            offset = start + length
        del buffer[:offset]
        return packets


def mqtt_string(text):
    """A UTF-8 string with its two-byte length prefix."""
    data = text.encode() if isinstance(text, str) else text
    return len(data).to_bytes(2, "big") + data


def connect_packet(client_id, keepalive, username=None, password=None):
    """An MQTT 3.1.1 CONNECT with clean session, and a username and password when given."""
    if password is not None and username is None:
        raise ValueError("MQTT 3.1.1 allows a password only with a username")
    flags, payload = 0x02, mqtt_string(client_id)
    if username is not None:
        flags, payload = flags | 0x80, payload + mqtt_string(username)
    if password is not None:
        flags, payload = flags | 0x40, payload + mqtt_string(password)
    body = mqtt_string("MQTT") + bytes((4, flags)) + keepalive.to_bytes(2, "big") + payload
    return bytes((CONNECT,)) + remaining_length_bytes(len(body)) + body


def publish_packet(topic_field, packet_id, payload):
    """A QoS 1 PUBLISH of `payload`; `topic_field` is the topic already length-prefixed."""
    length = len(topic_field) + 2 + len(payload)
    return b"".join(
        (PUBLISH_QOS1, remaining_length_bytes(length), topic_field, packet_id.to_bytes(2, "big"), payload)
    )
