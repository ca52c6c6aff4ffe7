"""Views of the auth blueprint."""

from flask import abort, flash, g, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user

from carweb import audit
from carweb.auth import bp, safe_next_url, sessions
from carweb.auth.forms import LoginForm, LogoutForm
from carweb.auth.limits import login_limits


@bp.route("/")
def home():
    """The fleet is the home page."""
    return redirect(url_for("devices.index"))


@bp.route("/login", methods=["GET", "POST"])
@login_limits
def login():
    """Show the login form; on success go where the user was headed, in a new session."""
    if current_user.is_authenticated:
        return redirect(url_for("devices.index"))
    if request.method == "POST" and request.mimetype != "application/x-www-form-urlencoded":
        abort(400, "The login form is sent form-encoded.")  # the limit's account key is read from it
    form = LoginForm()
    if form.validate_on_submit():
        session.clear()  # nothing of the anonymous session (or an earlier user's) carries over
        g.pop("csrf_token", None)  # Flask-WTF's copy of the cleared token: the next form makes a new one
        sessions.start(form.user)
        login_user(form.user, remember=form.remember.data)
        audit.record("login")
        return redirect(safe_next_url(request.args.get("next")))
    if form.is_submitted() and form.errors:
        audit.record("login failed", who=(form.email.data or "").strip().lower()[:254])
    return render_template("auth/login.html", form=form)


@bp.route("/logout", methods=["POST"])
def logout():
    """End the session."""
    if LogoutForm().validate_on_submit():
        audit.record("logout")
        sessions.end_current()
        logout_user()
        flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))
