"""Operators who log in to the web pages."""

import secrets
import time
from datetime import UTC, datetime
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from bson import ObjectId
from mongoengine import (
    BooleanField,
    DateTimeField,
    Document,
    EmailField,
    ListField,
    ObjectIdField,
    Q,
    StringField,
)

from carweb.config import SESSION_LIFETIME

ROLES = ("admin", "operator", "viewer")  # every role reads
# Who may do what, the one place it is said: routes, Socket.IO events and templates use these.
OPERATORS = ("admin", "operator")  # rename devices, upload firmware, start, resume and cancel rollouts
ADMINS = ("admin",)  # delete devices and firmware, manage users and tokens
MIN_PASSWORD = 12
MAX_SESSIONS = 20  # a user's open logins; a new one ends the oldest beyond this
_hasher = PasswordHasher()


@cache
def _nobody_hash():
    """A hash, made once per process with the current parameters, that no password matches."""
    return _hasher.hash(secrets.token_urlsafe(32))


def utcnow():
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def new_session_id():
    """A random login session id that starts with its creation time, so its age is known without a read."""
    return f"{int(time.time()):x}.{secrets.token_urlsafe(24)}"


def session_is_fresh(session_id):
    """Whether a login session id was made less than SESSION_LIFETIME ago (ids without a time never are)."""
    stamp, dot, _ = session_id.partition(".")
    try:
        age = time.time() - int(stamp, 16)
    except ValueError:
        return False
    return bool(dot) and 0 <= age < SESSION_LIFETIME.total_seconds()


class User(Document):
    """A person with a role; passwords are stored as argon2id hashes only."""

    email = EmailField(required=True, unique=True, domain_whitelist=["localhost"])
    password_hash = StringField(required=True)
    role = StringField(required=True, choices=ROLES, default="viewer")
    active = BooleanField(default=True)
    created_at = DateTimeField(default=utcnow)
    # Ids of the user's open login sessions, so loading the user checks the session too.
    session_ids = ListField(StringField())

    meta = {"collection": "users", "auto_create_index": False}
    _login_session = None  # the login session of this request (not stored with the user)
    api_token = None  # the API token of this request, when it came with one (not stored either)

    def set_password(self, password):
        """Replace the stored hash with one of `password`; ValueError when it is too short."""
        if len(password) < MIN_PASSWORD:
            raise ValueError(f"a password needs at least {MIN_PASSWORD} characters")
        self.password_hash = _hasher.hash(password)

    def check_password(self, password):
        """Tell whether `password` matches the stored hash."""
        try:
            return _hasher.verify(self.password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    @classmethod
    def check_nobody(cls, password):
        """Verify `password` against a hash no password matches: the work of a real check, always False."""
        return cls(password_hash=_nobody_hash()).check_password(password)

    def can_operate(self):
        """Admins and operators rename devices, upload firmware and run rollouts; viewers only look."""
        return self.role in OPERATORS

    def is_admin(self):
        """Admins also delete devices and firmware and manage users and tokens."""
        return self.role in ADMINS

    # The four members Flask-Login expects, written out so models stay free of Flask.
    @property
    def is_authenticated(self):
        """Every stored user is authenticated once loaded."""
        return True

    @property
    def is_active(self):
        """Deactivated users cannot log in."""
        return self.active

    @property
    def is_anonymous(self):
        """A stored user is never anonymous."""
        return False

    def get_id(self):
        """What Flask-Login keeps in the session and the remember-me cookie: user and login session.

        Both are checked on every request, so ending the login session (logout, log out
        everywhere, a new password, deactivation) ends the cookies that carry it.
        """
        return f"{self.pk}:{self._login_session}"

    def start_session(self, address=None, agent=None):
        """Record a new login of this user; get_id names it from now on."""
        session = LoginSession(user_id=self.pk, address=address, agent=(agent or "")[:300]).save()
        self.update(push__session_ids=session.pk)
        self._login_session = session.pk
        return session

    @classmethod
    def from_session_id(cls, value):
        """The active user a get_id() value names while its login session lasts, else None (one read)."""
        user_id, _, session_id = (value or "").partition(":")
        if not session_id or not ObjectId.is_valid(user_id) or not session_is_fresh(session_id):
            return None
        user = cls.objects(pk=ObjectId(user_id), session_ids=session_id, active=True).first()
        if user is not None:
            user._login_session = session_id
        return user

    def sessions(self):
        """This user's login sessions, newest first."""
        return LoginSession.objects(user_id=self.pk).order_by("-created_at")

    def surplus_sessions(self):
        """This user's login sessions to end: those past SESSION_LIFETIME and those beyond the newest MAX_SESSIONS.

        Also forgets ids of sessions the database already dropped (its TTL index), so the
        user's list of session ids stays as short as their open logins.
        """
        self.reload("session_ids")
        stale = [sid for sid in self.session_ids if not session_is_fresh(sid)]
        if stale:
            User.objects(pk=self.pk).update_one(pull_all__session_ids=stale)
        newest = self.sessions().only("id")
        beyond = [session.pk for session in newest[MAX_SESSIONS:]]
        cutoff = utcnow() - SESSION_LIFETIME
        return LoginSession.objects(Q(id__in=beyond) | Q(created_at__lt=cutoff), user_id=self.pk)

    @classmethod
    def find_by_email(cls, email):
        """The user with this email (case-insensitive), or None."""
        return cls.objects(email=email.strip().lower()).first()

    @classmethod
    def create_or_update(cls, email, password, role="admin"):
        """Create the user, or reset password and role of the existing one.

        A changed password ends the user's login sessions (their cookies stop working).
        """
        user = cls.find_by_email(email) or cls(email=email.strip().lower())
        changed = not user.password_hash or not user.check_password(password)
        if changed:
            user.set_password(password)
        user.role = role
        user.active = True
        user.save()
        if changed:
            end_login_sessions(LoginSession.objects(user_id=user.pk))
        return user


class LoginSession(Document):
    """One login: a browser's session, its remember-me cookie and its Socket.IO connections.

    Deleting it ends all three (carweb.auth.sessions); the id is random, and the cookies
    that carry it are signed.
    """

    id = StringField(primary_key=True, default=new_session_id)
    user_id = ObjectIdField(required=True)
    created_at = DateTimeField(default=utcnow)
    address = StringField()
    agent = StringField()
    sockets = ListField(StringField())  # Socket.IO sids opened in this session

    meta = {
        "collection": "login_sessions",
        "auto_create_index": False,
        "indexes": [
            "user_id",
            # MongoDB drops a session once it is too old to be used (its cookies stopped working then).
            {"fields": ["created_at"], "expireAfterSeconds": int(SESSION_LIFETIME.total_seconds())},
        ],
    }


def end_login_sessions(sessions):
    """Delete the login sessions of the query `sessions` and take them off their users; the ended ones.

    Their cookies stop working at once; their Socket.IO connections (`sockets`) are the
    caller's to disconnect (carweb.auth.sessions.end), as only a web process can.
    """
    ended = list(sessions.only("id", "user_id", "sockets"))
    for session in ended:
        User.objects(pk=session.user_id).update_one(pull__session_ids=session.pk)
    sessions.delete()
    return ended
