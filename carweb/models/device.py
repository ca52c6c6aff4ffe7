"""Devices, created on their first MQTT message."""

from mongoengine import BooleanField, DateTimeField, Document, IntField, StringField

from carweb.models.user import utcnow


class Device(Document):
    """One device, named by the first topic level of its messages.

    The bridge writes the counters behind the stream (`carweb.bridge.flush`): together
    they say what the device's messages up to number `last_seq` add up to.
    """

    device_id = StringField(required=True, unique=True)
    name = StringField(max_length=200)
    created_at = DateTimeField(default=utcnow)
    last_seen_at = DateTimeField()
    message_count = IntField(default=0)
    online = BooleanField(default=False)
    fw_version = StringField()
    # The highest message number counted in message_count (messages.seq).
    last_seq = IntField(default=0)
    # Place in the device list: larger is more recently seen; each number is held by at
    # most one device, so a range of numbers holds at most that many devices.
    seen_seq = IntField()

    meta = {
        "collection": "devices",
        "auto_create_index": False,
        "indexes": [{"fields": ["-seen_seq"], "name": "seen_order"}],
    }

    @property
    def display_name(self):
        """The name an operator gave the device, else its id."""
        return self.name or self.device_id
