"""Firmware: the image store, rollouts and their live pages, the public download endpoint."""

from flask import Blueprint

bp = Blueprint("firmware", __name__, url_prefix="/firmware")

from carweb.firmware import events, routes  # noqa: E402,F401 - registers views and handlers
