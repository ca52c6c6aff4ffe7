"""Views of the users blueprint: /users for admins, /account for everyone."""

from bson import ObjectId
from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user

from carweb import audit
from carweb.auth import role_required, sessions
from carweb.auth.limits import password_check_limit
from carweb.models import ApiToken, User
from carweb.models.user import ADMINS
from carweb.users import bp
from carweb.users.forms import (
    AuditFilterForm,
    ChangePasswordForm,
    ConfirmForm,
    CreateUserForm,
    EditUserForm,
    ResetPasswordForm,
    RevokeForm,
    TokenForm,
)


def user_or_404(user_id):
    """The user with this id, or 404."""
    user = User.objects(pk=user_id).first() if ObjectId.is_valid(user_id) else None
    if user is None:
        abort(404)
    return user


def is_last_admin(user):
    """True when `user` is the only active admin: demoting or deactivating them would lock everyone out."""
    return user.is_admin() and user.active and User.objects(role__in=ADMINS, active=True).count() <= 1


@bp.route("/users", methods=["GET", "POST"])
@role_required(ADMINS)
def index():
    """Every user, and the form that creates one."""
    form = CreateUserForm()
    if form.validate_on_submit():
        user = User(email=form.email.data.strip().lower(), role=form.role.data)
        user.set_password(form.password.data)
        user.save()
        audit.record("user created", user.email, role=user.role)
        flash(f"User {user.email} created.", "success")
        return redirect(url_for("users.index"))
    users = User.objects.order_by("email")
    return render_template("users/index.html", users=users, form=form), 400 if form.errors else 200


@bp.route("/users/<user_id>", methods=["GET", "POST"])
@role_required(ADMINS)
def edit(user_id):
    """A user's role and state; deactivating ends their sessions at once."""
    user = user_or_404(user_id)
    form = EditUserForm(obj=user)
    if form.validate_on_submit():
        if is_last_admin(user) and (form.role.data not in ADMINS or not form.active.data):
            flash("carweb needs one active admin: make another admin first.", "error")
            return redirect(url_for("users.edit", user_id=user_id))
        user.update(set__role=form.role.data, set__active=form.active.data)
        if not User.objects(role__in=ADMINS, active=True).first():
            # Two admins demoted each other at the same moment: both checks passed. Undo.
            user.update(set__role=user.role, set__active=user.active)
            flash("carweb needs one active admin: make another admin first.", "error")
            return redirect(url_for("users.edit", user_id=user_id))
        audit.record("user changed", user.email, role=form.role.data, active=form.active.data)
        if not form.active.data:
            sessions.end_all(user)
        flash(f"{user.email} saved.", "success")
        return redirect(url_for("users.edit", user_id=user_id))
    return _edit_page(user, form)


@bp.route("/users/<user_id>/password", methods=["POST"])
@role_required(ADMINS)
def reset_password(user_id):
    """Set a new password for a user; their sessions end."""
    user = user_or_404(user_id)
    form = ResetPasswordForm()
    if not form.validate_on_submit():
        return _edit_page(user, EditUserForm(obj=user), reset=form)
    user.set_password(form.password.data)
    user.save()
    sessions.end_all(user)
    audit.record("user password set", user.email)
    flash(f"New password set for {user.email}; their sessions ended.", "success")
    return redirect(url_for("users.edit", user_id=user_id))


@bp.route("/users/<user_id>/logout", methods=["POST"])
@role_required(ADMINS)
def end_sessions(user_id):
    """Log a user out everywhere."""
    user = user_or_404(user_id)
    if ConfirmForm().validate_on_submit():
        count = sessions.end_all(user)
        audit.record("user sessions ended", user.email, sessions=count)
        flash(f"{count} sessions of {user.email} ended.", "success")
    return redirect(url_for("users.edit", user_id=user_id))


def _edit_page(user, form, reset=None):
    """The edit page, with a form's errors (400) when one was refused."""
    reset = reset or ResetPasswordForm()
    page = render_template(
        "users/edit.html",
        user=user,
        form=form,
        reset=reset,
        confirm=ConfirmForm(),
        sessions=user.sessions(),
        tokens=ApiToken.of_user(user.pk),
        revoke=RevokeForm(),
    )
    return page, 400 if form.errors or reset.errors else 200


@bp.route("/account", methods=["GET", "POST"])
@password_check_limit
def account():
    """Your own password and sessions."""
    form = ChangePasswordForm()
    form.user = current_user
    if form.validate_on_submit():
        current_user.set_password(form.password.data)
        current_user.save()
        audit.record("user password set", current_user.email)
        sessions.end_all(current_user)  # every other browser is logged out...
        user = current_user._get_current_object()
        sessions.start(user)  # ...and this one goes on in a new session
        login_user(user)
        flash("Password changed; your other sessions ended.", "success")
        return redirect(url_for("users.account"))
    return account_page(form=form)


def account_page(form=None, token_form=None, new_token=None):
    """The account page: password, tokens (with a token just made, shown this once) and sessions.

    400 when a form on it was refused, so scripts and tests see the refusal.
    """
    form = form or ChangePasswordForm()
    token_form = token_form or TokenForm()
    page = render_template(
        "users/account.html",
        form=form,
        token_form=token_form,
        new_token=new_token,
        tokens=ApiToken.of_user(current_user.pk),
        revoke=RevokeForm(),
        confirm=ConfirmForm(),
        sessions=current_user.sessions(),
    )
    return page, 400 if form.errors or token_form.errors else 200


@bp.route("/account/logout", methods=["POST"])
def logout_everywhere():
    """End every session of yours, this one too."""
    if ConfirmForm().validate_on_submit():
        audit.record("user sessions ended", current_user.email)
        sessions.end_all(current_user)
        logout_user()
        flash("You are logged out everywhere.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/audit")
@role_required(ADMINS)
def audit_log():
    """The audit log, newest first, by keyset pages; filter by action and by user."""
    form = AuditFilterForm(request.args)
    if not form.validate():
        return render_template("users/audit.html", form=form, entries=[], older=None), 400
    entries, more = audit.page(
        form.action.data or None, form.who.data or None, audit.parse_cursor(form.before.data)
    )
    older = str(entries[-1].pk) if more else None
    return render_template("users/audit.html", form=form, entries=entries, older=older)
