"""Operators who log in to the web pages."""

from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from mongoengine import BooleanField, DateTimeField, Document, EmailField, StringField

ROLES = ("admin", "operator", "viewer")  # every role reads
# Who may do what, the one place it is said: routes, Socket.IO events and templates use these.
OPERATORS = ("admin", "operator")  # rename devices, upload firmware, start, resume and cancel rollouts
ADMINS = ("admin",)  # delete devices and firmware, manage users and tokens
_hasher = PasswordHasher()


def utcnow():
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class User(Document):
    """A person with a role; passwords are stored as argon2id hashes only."""

    email = EmailField(required=True, unique=True, domain_whitelist=["localhost"])
    password_hash = StringField(required=True)
    role = StringField(required=True, choices=ROLES, default="viewer")
    active = BooleanField(default=True)
    created_at = DateTimeField(default=utcnow)

    meta = {"collection": "users", "auto_create_index": False}

    def set_password(self, password):
        """Replace the stored hash with one of `password`."""
        self.password_hash = _hasher.hash(password)

    def check_password(self, password):
        """Tell whether `password` matches the stored hash."""
        try:
            return _hasher.verify(self.password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

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
        """The id Flask-Login keeps in the session."""
        return str(self.pk)

    @classmethod
    def find_by_email(cls, email):
        """The user with this email (case-insensitive), or None."""
        return cls.objects(email=email.strip().lower()).first()

    @classmethod
    def create_or_update(cls, email, password, role="admin"):
        """Create the user, or reset password and role of the existing one."""
        user = cls.find_by_email(email) or cls(email=email.strip().lower())
        user.set_password(password)
        user.role = role
        user.active = True
        user.save()
        return user
