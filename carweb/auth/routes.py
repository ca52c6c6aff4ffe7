"""Views of the auth blueprint."""

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user

from carweb.auth import bp, safe_next_url
from carweb.auth.forms import LoginForm, LogoutForm


@bp.route("/")
def home():
    """The fleet is the home page."""
    return redirect(url_for("devices.index"))


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Show the login form; on success go where the user was headed."""
    if current_user.is_authenticated:
        return redirect(url_for("devices.index"))
    form = LoginForm()
    if form.validate_on_submit():
        login_user(form.user, remember=form.remember.data)
        return redirect(safe_next_url(request.args.get("next")))
    return render_template("auth/login.html", form=form)


@bp.route("/logout", methods=["POST"])
def logout():
    """End the session."""
    if LogoutForm().validate_on_submit():
        logout_user()
        flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))
