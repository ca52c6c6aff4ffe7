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
    # The message's number in its device's history, 1, 2, 3... in arrival order, given by
    # the bridge; history pages are ranges of it (gaps are possible, repeats are not).
    seq = IntField()
    topic = StringField(required=True)
    payload = BinaryField()
    text = StringField()
    data = DynamicField()
    kind = StringField(choices=KINDS)
    size = IntField()
    truncated = BooleanField(default=False)
    # Why the message is stored with less than usual: JSON kept as text only, raw bytes only.
    raw_reason = StringField()
    qos = IntField(default=0)
    retain = BooleanField(default=False)
    direction = StringField(choices=DIRECTIONS, default="in")
    received_at = DateTimeField(required=True)
    msg_id = StringField()
    redelivered = BooleanField()

    meta = {
        "collection": "messages",
        "auto_create_index": False,
        "indexes": [
            # History pages, live catch-up and redelivery checks read ranges of it. Not
            # partial: SecantusDB plans no partial index for a range. Messages of earlier
            # versions are numbered before it is made (carweb/upgrade.py).
            {"fields": ["device_id", "-seq"], "name": "device_seq", "unique": True},
            # A device's own message id makes redeliveries no-ops; only messages that carry one.
            {
                "fields": ["device_id", "msg_id"],
                "name": "device_msg_id",
                "unique": True,
                "partialFilterExpression": {"msg_id": {"$exists": True}},
            },
        ],
    }
