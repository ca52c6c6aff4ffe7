"""Authentication: login, logout, and the rule that every page but a few needs a login."""

from functools import wraps

from flask import Blueprint, abort, request, url_for
from flask_login import current_user

from carweb.api.v1 import is_api_request
from carweb.extensions import login_manager
from carweb.models import ApiToken, User

bp = Blueprint("auth", __name__)
# firmware.download: devices authenticate with the signed token in the URL.
# The largest body a public endpoint accepts (the login form is well under 4 KiB).
ANONYMOUS_MAX_BODY = 16 * 1024
PUBLIC_ENDPOINTS = {
    "auth.login",
    "api.healthz",
    "api.metrics",
    "static",
    "firmware.download",
    "devices.device_socket",  # devices authenticate with their token at the handshake
    "api-docs.openapi_json",  # the API's description: no data, and tools read it before they have a token
}


def init_login(app):
    """Bind Flask-Login and the login limits, and make login the default for every endpoint."""
    from carweb.auth.limits import init_limits

    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message_category = "info"
    app.before_request(require_login)
    init_limits(app)


@login_manager.user_loader
def load_user(user_id):
    """The user of a session or remember-me cookie while its login session lasts and the user is active."""
    return User.from_session_id(user_id)


def require_login():
    """Redirect to /login for any endpoint not listed as public, before anything reads the body.

    Runs before CSRF protection, so an anonymous POST is turned away unread; what a
    public endpoint may be sent (the login form) is held to ANONYMOUS_MAX_BODY. Public
    endpoints do not load the user at all.
    """
    if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None or _is_api_preflight():
        request.max_content_length = ANONYMOUS_MAX_BODY  # none of them takes more, logged in or not
        return None
    if not current_user.is_authenticated:
        if is_api_request():
            abort(401, "Send a token: Authorization: Bearer <token> (create one on your account page).")
        return login_manager.unauthorized()
    return None


def _is_api_preflight():
    """A browser's CORS preflight of an API call: it carries no credentials by design."""
    return request.method == "OPTIONS" and is_api_request()


@login_manager.request_loader
def load_api_user(request):
    """The user an API request's bearer token acts as (API paths only; pages and sockets need a login)."""
    if not is_api_request():
        return None
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    return ApiToken.user_for(secret.strip())


def role_required(roles):
    """Refuse a view with 403 unless the user has one of `roles` (OPERATORS or ADMINS of models.user)."""

    def decorator(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            if current_user.role not in roles:
                abort(403)
            return view(*args, **kwargs)

        return wrapped

    return decorator


def safe_next_url(target):
    """Return `target` when it is a path on this site, else the device list.

    Browsers and Werkzeug drop tabs and newlines from a Location and read a backslash as
    a slash, so `/<tab>/evil.com` would leave the site: a path with any of those, any other
    control character or space, or two leading slashes is refused whole.
    """
    if (
        isinstance(target, str)
        and target.startswith("/")
        and not target.startswith("//")
        and all(" " < ch != "\x7f" for ch in target)
        and "\\" not in target
    ):
        return target
    return url_for("devices.index")


from carweb.auth import routes  # noqa: E402,F401 - registers the views on bp
