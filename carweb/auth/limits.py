"""Login attempts are limited per account and per address (Flask-Limiter).

Every login POST counts, successful or not, and is counted before the password is
checked: counting only failures (after the view) would let attempts sent at the same
moment all pass the check before any of them counts. Once a limit is reached every
attempt it covers answers 429 until its window has passed, the right password too, so
guessing stops. The counters live in Redis when REDIS_URL is set (shared by every web
process), else in this process.
"""

from flask import current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import current_user

limiter = Limiter(key_func=get_remote_address, default_limits=[])


def init_limits(app):
    """Bind the limiter with its storage: Redis when configured, memory otherwise."""
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config.get("REDIS_URL") or "memory://")
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    # Redis down: count in memory meanwhile instead of refusing every login.
    app.config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    limiter.init_app(app)


def account_key():
    """The account a login form names, as the user store spells emails."""
    return "account:" + (request.form.get("email") or "").strip().lower()[:254]


def login_limits(view):
    """The two limits of the login view, on POSTs only."""
    per_account = limiter.limit(
        lambda: current_app.config["CARWEB_LOGIN_LIMIT_ACCOUNT"],
        key_func=account_key,
        methods=["POST"],
        scope="login-account",
    )
    per_address = limiter.limit(
        lambda: current_app.config["CARWEB_LOGIN_LIMIT_ADDRESS"],
        methods=["POST"],
        scope="login-address",
    )
    return per_account(per_address(view))


def password_check_limit(view):
    """The account limit on a logged-in user's own password form: each POST checks the current password.

    Without it a stolen session could guess the password there, each guess an argon2
    verification on the server's one event loop.
    """
    return limiter.limit(
        lambda: current_app.config["CARWEB_LOGIN_LIMIT_ACCOUNT"],
        key_func=lambda: f"account:{current_user.email}",
        methods=["POST"],
        scope="password-check",
    )(view)
