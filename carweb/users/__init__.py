"""Users: admins manage accounts and roles; everyone manages their own password, API tokens and sessions."""

from flask import Blueprint

from carweb.models.user import MIN_PASSWORD

bp = Blueprint("users", __name__)
bp.add_app_template_global(MIN_PASSWORD, "config_min_password")

from carweb.users import routes, tokens  # noqa: E402,F401 - registers the views on bp
