"""The bridge's own bookkeeping in the database: the flush checkpoint, counters, upgrades done."""

from mongoengine import BooleanField, Document, IntField, ObjectIdField, StringField

INGEST = "ingest"


class IngestState(Document):
    """One document (`_id` "ingest") the bridge and the device list share."""

    id = StringField(primary_key=True, default=INGEST)
    # Every message with an _id up to this one is counted in its device's document.
    flushed_through = ObjectIdField()
    # The last place handed out in the device list (devices.seen_seq).
    seen_seq = IntField(default=0)
    # Messages stored before history numbers existed have been numbered.
    history_numbered = BooleanField(default=False)

    meta = {"collection": "ingest_state", "auto_create_index": False}
