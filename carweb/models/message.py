"""Every MQTT message seen on the broker, stored per device."""

from mongoengine import (
    BinaryField,
    BooleanField,
    DateTimeField,
    Document,
    DynamicField,
    IntField,
    StringField,
)

DIRECTIONS = ("in", "out")
KINDS = ("json", "text", "binary")


class Message(Document):
    """One message: the exact payload bytes plus its decoded text and parsed JSON."""

    device_id = StringField(required=True)
    topic = StringField(required=True)
    payload = BinaryField()
    text = StringField()
    data = DynamicField()
    kind = StringField(choices=KINDS)
    size = IntField()
    truncated = BooleanField(default=False)
    qos = IntField(default=0)
    retain = BooleanField(default=False)
    direction = StringField(choices=DIRECTIONS, default="in")
    received_at = DateTimeField(required=True)
    msg_id = StringField()
    redelivered = BooleanField()

    meta = {
        "collection": "messages",
        "auto_create_index": False,
        # _id breaks ties between messages stored in the same millisecond, so the
        # history keyset (received_at, _id) is total and served by one index.
        "indexes": [
            {"fields": ["device_id", "-received_at", "-_id"], "name": "device_history"},
            # A device's own message id makes redeliveries no-ops; only messages that carry one.
            {
                "fields": ["device_id", "msg_id"],
                "name": "device_msg_id",
                "unique": True,
                "partialFilterExpression": {"msg_id": {"$exists": True}},
            },
        ],
    }
