"""The audit log: who did what, when, from where."""

from mongoengine import DateTimeField, DictField, Document, StringField

from carweb.models.user import utcnow

ACTIONS = (
    "login",
    "login failed",
    "logout",
    "user created",
    "user changed",
    "user password set",
    "user sessions ended",
    "device added",
    "device renamed",
    "device deleted",
    "firmware uploaded",
    "firmware deleted",
    "rollout started",
    "rollout resumed",
    "rollout canceled",
    "token created",
    "token revoked",
    "device token created",
    "device token revoked",
)


class AuditEntry(Document):
    """One action. `who` is the acting user's email (or the email a failed login named)."""

    at = DateTimeField(default=utcnow, required=True)
    who = StringField()
    role = StringField()
    action = StringField(required=True, choices=ACTIONS)
    target = StringField()  # what it acted on: a device id, a user's email, an image's label...
    details = DictField()
    address = StringField()
    via = StringField(choices=("web", "api", "cli"), default="web")

    meta = {
        "collection": "audit",
        "auto_create_index": False,
        # Pages go newest first by _id (keyset); filters by action or by user read their range only.
        "indexes": [{"fields": ["action", "-_id"]}, {"fields": ["who", "-_id"]}],
    }
