"""carweb: the back end of a fleet of connected cars (Flask app factory)."""

import logging
import os

from flask import Flask, render_template
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from carweb.config import ROOT, Config


def create_app(config=None):
    """Build the app: config, extensions, blueprints, error pages, commands, background."""
    if config is None:
        config = Config()
    app = Flask(
        __name__,
        template_folder=os.path.join(ROOT, "templates"),
        static_folder=os.path.join(ROOT, "static"),
    )
    app.config.from_object(config)
    if not app.config.get("SECRET_KEY"):
        raise RuntimeError("SECRET_KEY is not set; see .env.example")
    logging.basicConfig(level=os.environ.get("CARWEB_LOG_LEVEL", "INFO"))
    register_extensions(app)
    trust_proxies(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_commands(app)
    register_background(app)
    return app


def register_extensions(app):
    """Bind the unbound extensions of `extensions.py` to this app."""
    from carweb.auth import init_login
    from carweb.extensions import connect_db, csrf, socketio
    from carweb.security import init_security_headers

    connect_db(app)
    init_security_headers(app)
    init_login(app)  # before CSRF: an anonymous POST is turned away before its body is read
    csrf.init_app(app)
    socketio.init_app(
        app,
        async_mode="gevent" if _gevent_patched() else "threading",
        message_queue=app.config.get("SOCKETIO_MESSAGE_QUEUE"),
        cors_allowed_origins=app.config.get("SOCKETIO_ALLOWED_ORIGINS"),
    )


def trust_proxies(app):
    """Behind CARWEB_PROXY_HOPS proxies, take the client's address and scheme from their headers.

    Without it every request behind nginx comes from nginx's address: the per-address
    login limit would count all users together, and the audit log would name nginx.
    """
    hops = app.config.get("CARWEB_PROXY_HOPS") or 0
    if hops > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)


def register_blueprints(app):
    """Mount every feature's blueprint, and the JSON API."""
    from carweb.api import bp as api_bp
    from carweb.api.v1 import init_api
    from carweb.auth import bp as auth_bp
    from carweb.devices import bp as devices_bp
    from carweb.firmware import bp as firmware_bp
    from carweb.users import bp as users_bp

    app.register_blueprint(auth_bp)
    app.register_blueprint(devices_bp)
    app.register_blueprint(firmware_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(users_bp)
    init_api(app)


ERROR_PAGES = (400, 401, 403, 404, 413, 429, 500)


def register_errorhandlers(app):
    """Errors as JSON under the API, as pages from templates/errors/ elsewhere."""
    from carweb.api.v1 import is_api_request, json_error

    def render_error(error):
        if is_api_request():
            return json_error(error)
        if error.code not in ERROR_PAGES:
            return error  # Werkzeug's own short page (405, 415...)
        return render_template(f"errors/{error.code}.html", error=error), error.code

    app.register_error_handler(HTTPException, render_error)


def register_commands(app):
    """Add carweb's `flask` commands."""
    from carweb.cli import init_app

    init_app(app)


def register_background(app):
    """Wire firmware updates and device sockets' acks into the bridge; start it and the tasks only inside a gevent server process."""
    from carweb import ota
    from carweb.background import start_background
    from carweb.devices import stored

    ota.init_app(app)
    stored.init_app(app)

    if _gevent_patched() and app.config["CARWEB_BRIDGE"] != "off":
        start_background(app, bridge=app.config["CARWEB_BRIDGE"] == "embedded")


def _gevent_patched():
    """True inside gunicorn's gevent worker or `python -m carweb.bridge`, False in CLI and tests."""
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("socket")
