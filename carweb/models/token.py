"""Bearer credentials stored as a hash: users' API tokens (acting with their role) and devices' tokens."""

import hashlib
import secrets
from datetime import timedelta

from mongoengine import DateTimeField, Document, ObjectIdField, StringField

from carweb.models.user import User, utcnow

MAX_TOKENS = 50  # a user's live tokens; revoking makes room
MAX_DEVICE_TOKENS = 20
MAX_EXPIRES_DAYS = 3650
LAST_USED_EVERY = timedelta(minutes=1)  # at most one write per token per minute
EXPIRED_KEPT = timedelta(days=30)  # expired tokens are listed as expired this long, then dropped


def token_digest(secret):
    """The stored form of a token: SHA-256, enough for 256 random bits (no password to guess)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


class Credential(Document):
    """A named bearer secret, stored as its SHA-256 only: shown once when it is made, then never again."""

    PREFIX = "cw_"

    name = StringField(required=True, max_length=100)
    digest = StringField(required=True, unique=True)
    hint = StringField()  # the first characters, so the owner can tell tokens apart
    created_at = DateTimeField(default=utcnow)
    last_used_at = DateTimeField()

    meta = {"abstract": True}

    @classmethod
    def mint(cls, name):
        """A new secret named `name` and what is stored of it: (secret, {name, digest, hint}); ValueError when refused."""
        name = (name or "").strip()
        if not 1 <= len(name) <= 100:
            raise ValueError("a token needs a name of 1 to 100 characters")
        secret = cls.PREFIX + secrets.token_urlsafe(32)
        return secret, {"name": name, "digest": token_digest(secret), "hint": secret[: len(cls.PREFIX) + 4]}

    @classmethod
    def issue(cls, name, **fields):
        """A new credential named `name`: (the stored document, the secret to show once); ValueError when refused."""
        secret, stored = cls.mint(name)
        return cls(**stored, **fields).save(), secret

    @classmethod
    def find(cls, secret):
        """The stored credential a secret is, or None (looked up by its digest)."""
        if not isinstance(secret, str) or not secret.startswith(cls.PREFIX) or len(secret) > 200:
            return None
        return cls.objects(digest=token_digest(secret)).first()

    def touch(self):
        """Note that the credential was used now; written at most once per LAST_USED_EVERY."""
        now = utcnow()
        if self.last_used_at is None or now - self.last_used_at >= LAST_USED_EVERY:
            self.update(set__last_used_at=now)
            self.last_used_at = now


class ApiToken(Credential):
    """One named API token of one user, acting with the user's role."""

    PREFIX = "cwt_"  # so a token in a log or a repository is recognisable (and scannable) as carweb's

    user_id = ObjectIdField(required=True)
    expires_at = DateTimeField()

    meta = {
        "collection": "api_tokens",
        "auto_create_index": False,
        "indexes": [
            "user_id",
            # MongoDB drops a token this long after it expired; until then it is listed as expired.
            {"fields": ["expires_at"], "expireAfterSeconds": int(EXPIRED_KEPT.total_seconds())},
        ],
    }

    @property
    def expired(self):
        """Whether the token's expiry has passed."""
        return self.expires_at is not None and self.expires_at <= utcnow()

    @classmethod
    def create(cls, user, name, expires_days=None):
        """A new token of `user`: (the stored token, the secret to show once); ValueError when refused."""
        if expires_days is not None and not 1 <= expires_days <= MAX_EXPIRES_DAYS:
            raise ValueError(f"a token expires after 1 to {MAX_EXPIRES_DAYS} days, or never")
        if cls.objects(user_id=user.pk).count() >= MAX_TOKENS:
            raise ValueError(f"a user has at most {MAX_TOKENS} tokens; revoke one first")
        expires_at = utcnow() + timedelta(days=expires_days) if expires_days else None
        return cls.issue(name, user_id=user.pk, expires_at=expires_at)

    @classmethod
    def user_for(cls, secret):
        """The active user a token acts as, with the token on `user.api_token`; None when it is not valid."""
        token = cls.find(secret)
        if token is None or token.expired:
            return None
        user = User.objects(pk=token.user_id, active=True).first()
        if user is None:
            return None
        token.touch()
        user.api_token = token
        return user

    @classmethod
    def of_user(cls, user_id):
        """A user's tokens, newest first."""
        return cls.objects(user_id=user_id).order_by("-created_at")


class DeviceToken(Credential):
    """One named credential of one device, for transports other than MQTT (the device WebSocket)."""

    PREFIX = "cwd_"

    device_id = StringField(required=True)

    meta = {"collection": "device_tokens", "auto_create_index": False, "indexes": ["device_id"]}

    @classmethod
    def create(cls, device_id, name):
        """A new token of a device: (the stored token, the secret to show once); ValueError when refused."""
        if cls.objects(device_id=device_id).count() >= MAX_DEVICE_TOKENS:
            raise ValueError(f"a device has at most {MAX_DEVICE_TOKENS} tokens; revoke one first")
        return cls.issue(name, device_id=device_id)

    @classmethod
    def of_device(cls, device_id):
        """A device's tokens, newest first."""
        return cls.objects(device_id=device_id).order_by("-created_at")
