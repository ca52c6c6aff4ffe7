"""The JSON API under /api/v1 (flask-smorest): bearer tokens, JSON errors, CORS for configured origins only.

The OpenAPI document at /api/v1/openapi.json is generated from the marshmallow schemas
that validate every request and shape every response (`schemas.py`).
"""

from flask import jsonify, request
from flask_cors import CORS
from flask_login import current_user
from flask_smorest import Api

from carweb.config import API_PREFIX
from carweb.extensions import csrf

API_MAX_BODY = 4 * 1024 * 1024  # a rollout naming 100,000 device ids fits
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# carweb's own pages call the API with their session cookie (and CSRF token for writes);
# that is not an interface for others, so the document names the bearer token only.
SECURITY_SCHEMES = {"bearer": {"type": "http", "scheme": "bearer", "description": "A token from /account"}}


class JsonApi(Api):
    """flask-smorest's Api without its app-wide error handler: carweb's answers JSON under the API only."""

    def _register_error_handlers(self):
        """Nothing: `carweb.register_errorhandlers` calls `json_error` for API paths."""


def init_api(app):
    """Mount the API's blueprints, its OpenAPI document and its CORS policy on `app`."""
    from carweb.api.v1 import devices, firmware

    app.config.update(
        API_TITLE="carweb",
        API_VERSION="1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX=API_PREFIX,
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "components": {"securitySchemes": SECURITY_SCHEMES},
            "security": [{"bearer": []}],
            "info": {"description": "Devices, message history and firmware rollouts of a carweb fleet."},
        },
    )
    api = JsonApi(app)
    for blueprint in (devices.blp, firmware.blp):
        csrf.exempt(blueprint)  # tokens need none; cookie writes are checked in guard_api_request
        api.register_blueprint(blueprint)
    if app.config["CARWEB_CORS_ORIGINS"]:
        CORS(
            app,
            resources={f"{API_PREFIX}/*": {"origins": app.config["CARWEB_CORS_ORIGINS"]}},
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Content-Disposition"],
            methods=["GET", "POST"],
            max_age=600,
            supports_credentials=False,
        )


def is_api_request():
    """Whether this request is for the JSON API (errors answer JSON there)."""
    return request.path == API_PREFIX or request.path.startswith(API_PREFIX + "/")


def guard_api_request():
    """Before each API view: bodies up to API_MAX_BODY; a write with the session cookie needs its CSRF token.

    A script sends its bearer token, which no other site can make a browser send; a
    page of carweb's sends the session cookie, which every site can, so it also sends
    the CSRF token (X-CSRFToken header) as its forms do.
    """
    request.max_content_length = API_MAX_BODY
    if request.method not in SAFE_METHODS and current_user.api_token is None:
        csrf.protect()


def json_error(error):
    """An HTTP error as JSON: code, status, message, and the fields' errors when a request did not validate."""
    data = getattr(error, "data", None) or {}
    body = {"code": error.code, "status": error.name, "message": data.get("message") or error.description}
    errors = data.get("errors") or data.get("messages")
    if errors:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = error.code
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    if error.code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="carweb"'
    return response
