"""Firmware: the image store, rollouts and their live pages, the public download endpoint."""

from flask import Blueprint, current_app

bp = Blueprint("firmware", __name__, url_prefix="/firmware")


def app_object():
    """The app object itself, for domain code that publishes beside requests and commands."""
    return current_app._get_current_object()


from carweb.firmware import events, routes  # noqa: E402,F401 - registers views and handlers
