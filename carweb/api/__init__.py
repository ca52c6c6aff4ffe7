"""Machine-facing endpoints: health and metrics."""

from flask import Blueprint

bp = Blueprint("api", __name__)

from carweb.api import routes  # noqa: E402,F401 - registers the views on bp
