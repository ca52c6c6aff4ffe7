"""Devices, created on their first MQTT message."""

from mongoengine import BooleanField, DateTimeField, Document, IntField, ObjectIdField, StringField

from carweb.models.user import utcnow


class Device(Document):
    """One device, named by the first topic level of its messages."""

    device_id = StringField(required=True, unique=True)
    name = StringField(max_length=200)
    created_at = DateTimeField(default=utcnow)
    last_seen_at = DateTimeField()
    message_count = IntField(default=0)
    online = BooleanField(default=False)
    fw_version = StringField()
    # Digest of the last counted batch's message ids, so a retried batch is not counted twice.
    last_ingest_id = ObjectIdField()

    meta = {
        "collection": "devices",
        "auto_create_index": False,
        "indexes": [{"fields": ["-last_seen_at"]}],
    }

    @property
    def display_name(self):
        """The name an operator gave the device, else its id."""
        return self.name or self.device_id

    def messages_per_second(self):
        """The device's average message rate over its life, or None before two messages."""
        if not self.last_seen_at or not self.created_at or self.message_count < 2:
            return None
        span = (self.last_seen_at - self.created_at).total_seconds()
        return self.message_count / span if span > 0 else None
