"""Views of API tokens: everyone creates and revokes their own on /account; admins revoke anyone's."""

from bson import ObjectId
from flask import abort, flash, redirect, url_for
from flask_login import current_user

from carweb import audit
from carweb.auth import role_required
from carweb.models import ApiToken
from carweb.models.user import ADMINS
from carweb.users import bp
from carweb.users.forms import RevokeForm, TokenForm
from carweb.users.routes import account_page, user_or_404


@bp.route("/account/tokens", methods=["POST"])
def create_token():
    """Make a token of yours and show it this once (it is stored hashed)."""
    form = TokenForm()
    if form.validate_on_submit():
        try:
            token, secret = ApiToken.create(current_user, form.name.data, form.expires_days.data)
        except ValueError as exc:
            form.name.errors.append(str(exc))
        else:
            audit.record("token created", current_user.email, name=token.name, expires_at=token.expires_at)
            return account_page(new_token=secret)
    return account_page(token_form=form)


@bp.route("/account/tokens/<token_id>/revoke", methods=["POST"])
def revoke_own_token(token_id):
    """Revoke one of your tokens: it stops working at once."""
    revoke_token(ApiToken.of_user(current_user.pk), token_id, "token revoked", current_user.email)
    return redirect(url_for("users.account"))


@bp.route("/users/<user_id>/tokens/<token_id>/revoke", methods=["POST"])
@role_required(ADMINS)
def revoke_user_token(user_id, token_id):
    """Revoke a token of any user (admin)."""
    owner = user_or_404(user_id)
    revoke_token(ApiToken.of_user(owner.pk), token_id, "token revoked", owner.email)
    return redirect(url_for("users.edit", user_id=user_id))


def revoke_token(tokens, token_id, action, target):
    """Delete the token `token_id` among `tokens` (an owner's; 404 if none such) once the form's CSRF token checks out.

    Used for users' API tokens and devices' tokens alike; `action` and `target` go to the audit log.
    """
    token = tokens.filter(pk=token_id).first() if ObjectId.is_valid(token_id) else None
    if token is None:
        abort(404)
    if RevokeForm().validate_on_submit():
        token.delete()
        audit.record(action, target, name=token.name)
        flash(f"Token {token.name} revoked.", "success")
