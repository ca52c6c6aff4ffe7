"""API tokens: a user's bearer credentials for scripts, stored as a hash, acting with the user's role."""

import hashlib
import secrets
from datetime import timedelta

from mongoengine import DateTimeField, Document, ObjectIdField, StringField

from carweb.models.user import User, utcnow

PREFIX = "cwt_"  # so a token in a log or a repository is recognisable (and scannable) as carweb's
MAX_TOKENS = 50  # a user's live tokens; revoking makes room
MAX_EXPIRES_DAYS = 3650
LAST_USED_EVERY = timedelta(minutes=1)  # at most one write per token per minute
EXPIRED_KEPT = timedelta(days=30)  # expired tokens are listed as expired this long, then dropped


def token_digest(secret):
    """The stored form of a token: SHA-256, enough for 256 random bits (no password to guess)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


class ApiToken(Document):
    """One named token of one user; the secret itself is shown once and never stored."""

    user_id = ObjectIdField(required=True)
    name = StringField(required=True, max_length=100)
    digest = StringField(required=True, unique=True)
    hint = StringField()  # the first characters, so the owner can tell tokens apart
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField()
    last_used_at = DateTimeField()

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
        name = (name or "").strip()
        if not 1 <= len(name) <= 100:
            raise ValueError("a token needs a name of 1 to 100 characters")
        if expires_days is not None and not 1 <= expires_days <= MAX_EXPIRES_DAYS:
            raise ValueError(f"a token expires after 1 to {MAX_EXPIRES_DAYS} days, or never")
        if cls.objects(user_id=user.pk).count() >= MAX_TOKENS:
            raise ValueError(f"a user has at most {MAX_TOKENS} tokens; revoke one first")
        secret = PREFIX + secrets.token_urlsafe(32)
        token = cls(
            user_id=user.pk,
            name=name,
            digest=token_digest(secret),
            hint=secret[: len(PREFIX) + 4],
            expires_at=utcnow() + timedelta(days=expires_days) if expires_days else None,
        ).save()
        return token, secret

    @classmethod
    def user_for(cls, secret):
        """The active user a token acts as, with the token on `user.api_token`; None when it is not valid."""
        if not secret.startswith(PREFIX) or len(secret) > 200:
            return None
        token = cls.objects(digest=token_digest(secret)).first()
        if token is None or token.expired:
            return None
        user = User.objects(pk=token.user_id, active=True).first()
        if user is None:
            return None
        token.touch()
        user.api_token = token
        return user

    def touch(self):
        """Note that the token was used now; written at most once per LAST_USED_EVERY."""
        now = utcnow()
        if self.last_used_at is None or now - self.last_used_at >= LAST_USED_EVERY:
            self.update(set__last_used_at=now)
            self.last_used_at = now

    @classmethod
    def of_user(cls, user_id):
        """A user's tokens, newest first."""
        return cls.objects(user_id=user_id).order_by("-created_at")
