"""Views of the api blueprint."""

import hmac
import logging

from flask import Response, abort, current_app, jsonify, request
from flask_login import current_user
from mongoengine.connection import get_db
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pymongo.errors import PyMongoError

from carweb.api import bp
from carweb.background import running_bridge

log = logging.getLogger(__name__)


def database_state():
    """'ok' when MongoDB answers a ping, else 'unreachable' (the public page shows no error text)."""
    try:
        get_db().command("ping")
        return "ok"
    except PyMongoError as exc:
        log.warning("health check: MongoDB did not answer: %s", exc)
        return "unreachable"


def bridge_state(app):
    """The bridge's state in this process, or how it runs when it runs elsewhere."""
    mode = app.config["CARWEB_BRIDGE"]
    bridge = running_bridge(app)
    if bridge is not None:
        return bridge.status()
    if mode == "embedded":
        return {"mqtt": "not started", "bridge": "not started"}
    return {"mqtt": mode, "bridge": mode}


@bp.route("/healthz")
def healthz():
    """200 when MongoDB answers and the bridge is connected, else 503; same keys both ways."""
    body = {"db": database_state(), **bridge_state(current_app)}
    healthy = body["db"] == "ok" and body["mqtt"] in ("connected", "external", "off")
    return jsonify(body), 200 if healthy else 503


@bp.route("/metrics")
def metrics():
    """Prometheus text format; for a logged-in user or a bearer of CARWEB_METRICS_TOKEN."""
    token = current_app.config.get("CARWEB_METRICS_TOKEN")
    offered = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    # Bytes: compare_digest refuses str with non-ASCII characters, which a client may send.
    allowed = current_user.is_authenticated or (
        token and hmac.compare_digest(offered.encode("utf-8", "surrogateescape"), token.encode())
    )
    if not allowed:
        abort(401)
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)
