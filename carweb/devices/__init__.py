"""Devices: the fleet list, each device's page with its message history, rename, delete."""

from flask import Blueprint

from carweb.live import format_utc

bp = Blueprint("devices", __name__, url_prefix="/devices")
bp.add_app_template_filter(format_utc, "utc")

from carweb.devices import events, routes, ws  # noqa: E402,F401 - registers views and handlers
