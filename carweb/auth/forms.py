"""Forms of the auth blueprint."""

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, SubmitField
from wtforms.validators import DataRequired, Length, ValidationError

from carweb.models import User


class LoginForm(FlaskForm):
    """Email and password; `user` holds the matching active user once validated."""

    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    remember = BooleanField("Keep me logged in")
    submit = SubmitField("Log in")
    user = None

    def validate_password(self, field):
        """Check the password against the stored hash, saying nothing about which part was wrong."""
        user = User.find_by_email(self.email.data or "")
        if user is None or not user.active:
            User.check_nobody(field.data)  # the same hashing work, so timing names no account
            raise ValidationError("Wrong email or password.")
        if not user.check_password(field.data):
            raise ValidationError("Wrong email or password.")
        self.user = user


class LogoutForm(FlaskForm):
    """An empty form so logging out is a POST with a CSRF token."""

    submit = SubmitField("Log out")
