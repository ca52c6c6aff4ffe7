"""Forms of the users blueprint."""

from flask_wtf import FlaskForm
from mongoengine.errors import ValidationError as MongoValidationError
from wtforms import (
    BooleanField,
    EmailField,
    HiddenField,
    IntegerField,
    PasswordField,
    SelectChoice,
    SelectField,
    StringField,
    SubmitField,
)
from wtforms.validators import (
    DataRequired,
    EqualTo,
    Length,
    NumberRange,
    Optional,
    Regexp,
    ValidationError,
)

from carweb.models.audit import ACTIONS
from carweb.models.token import MAX_EXPIRES_DAYS
from carweb.models.user import MIN_PASSWORD, ROLES, User

ROLE_CHOICES = [SelectChoice(role) for role in ROLES]


def new_password_field(label="New password"):
    """A password of MIN_PASSWORD to 1024 characters."""
    message = f"Use at least {MIN_PASSWORD} characters (and at most 1024)."
    return PasswordField(
        label, validators=[DataRequired(), Length(min=MIN_PASSWORD, max=1024, message=message)]
    )


class CreateUserForm(FlaskForm):
    """A new account: email, role and a first password the admin hands over."""

    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    role = SelectField("Role", choices=ROLE_CHOICES, default="viewer")
    password = new_password_field("Password")
    submit = SubmitField("Create user")

    def validate_email(self, field):
        """A valid address (as the user store checks it), one account per email whatever its case."""
        try:
            User.email.validate(field.data.strip().lower())
        except MongoValidationError as exc:
            raise ValidationError("Not a valid email address.") from exc
        if User.find_by_email(field.data or ""):
            raise ValidationError("A user with this email exists.")


class EditUserForm(FlaskForm):
    """Role and whether the account may log in."""

    role = SelectField("Role", choices=ROLE_CHOICES)
    active = BooleanField("Active (may log in)")
    submit = SubmitField("Save")


class ResetPasswordForm(FlaskForm):
    """An admin sets a new password for someone; their sessions end."""

    password = new_password_field()
    submit = SubmitField("Set password")


class ChangePasswordForm(FlaskForm):
    """A user changes their own password, proving they know the current one."""

    current = PasswordField("Current password", validators=[DataRequired(), Length(max=1024)])
    password = new_password_field()
    confirm = PasswordField(
        "New password again", validators=[EqualTo("password", "The two new passwords differ.")]
    )
    submit = SubmitField("Change password")
    user = None

    def validate_current(self, field):
        """The current password must be right."""
        if not self.user.check_password(field.data):
            raise ValidationError("The current password is wrong.")


class ConfirmForm(FlaskForm):
    """A button with a CSRF token (log out everywhere)."""

    submit = SubmitField("Log out everywhere")


class TokenForm(FlaskForm):
    """A new API token: a name to tell it apart, and when it expires."""

    name = StringField("Name", validators=[DataRequired(), Length(max=100)])
    expires_days = IntegerField(
        "Expires after (days, empty: never)",
        validators=[Optional(), NumberRange(1, MAX_EXPIRES_DAYS)],
    )
    submit = SubmitField("Create token")


class RevokeForm(FlaskForm):
    """The revoke button of one token."""

    submit = SubmitField("Revoke")


class AuditFilterForm(FlaskForm):
    """Filters of the audit log (a GET form, no CSRF)."""

    class Meta:
        csrf = False

    action = SelectField(
        "Action", choices=[SelectChoice("", "any")] + [SelectChoice(a) for a in ACTIONS], default=""
    )
    who = StringField("User", validators=[Optional(), Length(max=254)])
    before = HiddenField(validators=[Optional(), Regexp("^[0-9a-f]{24}$", message="Bad page cursor.")])
