"""Forms of the devices blueprint."""

from datetime import UTC

from flask_wtf import FlaskForm
from wtforms import DateTimeLocalField, HiddenField, IntegerField, StringField, SubmitField
from wtforms.validators import DataRequired, Length, NumberRange, Optional, ValidationError

from carweb.bridge.topics import MAX_DEVICE_ID_LENGTH
from carweb.history import decode_cursor

FIRST_YEAR, LAST_YEAR = 1970, 9998


class RenameForm(FlaskForm):
    """A device's display name."""

    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    submit = SubmitField("Rename")


class AddDeviceForm(FlaskForm):
    """A device added by its id before it first speaks."""

    device_id = StringField("Device id", validators=[DataRequired(), Length(max=MAX_DEVICE_ID_LENGTH)])
    submit = SubmitField("Add device")


class DeviceTokenForm(FlaskForm):
    """A new token for a device: a name to tell it apart."""

    name = StringField("Token name", validators=[DataRequired(), Length(max=100)])
    submit = SubmitField("Create token")


class DeleteForm(FlaskForm):
    """Confirms deleting a device and all its messages."""

    submit = SubmitField("Delete device and messages")


class SearchForm(FlaskForm):
    """Search of the device list by id or name (a GET form, no CSRF)."""

    class Meta:
        csrf = False

    q = StringField("Search", validators=[Optional(), Length(max=200)])
    before = IntegerField(validators=[Optional(), NumberRange(min=1)])


class HistoryFilterForm(FlaskForm):
    """Filters of a device's message history (a GET form, no CSRF); times are UTC."""

    class Meta:
        csrf = False

    topic = StringField("Topic", validators=[Optional(), Length(max=1024)])
    since = DateTimeLocalField("From (UTC)", validators=[Optional()], format="%Y-%m-%dT%H:%M")
    until = DateTimeLocalField("To (UTC)", validators=[Optional()], format="%Y-%m-%dT%H:%M")
    before = HiddenField()

    def validate_before(self, field):
        """The cursor must be one this app made."""
        if field.data:
            try:
                decode_cursor(field.data)
            except ValueError as exc:
                raise ValidationError("Bad page cursor.") from exc

    def validate_since(self, field):
        """Years 1970 to 9998: no device sent anything earlier, and later ones overflow in date arithmetic."""
        _within_years(field)

    def validate_until(self, field):
        """The range must not end before it starts."""
        _within_years(field)
        if field.data and self.since.data and field.data < self.since.data:
            raise ValidationError("'To' is before 'From'.")

    def utc(self, field):
        """A time field's value as an aware UTC datetime, or None."""
        return field.data.replace(tzinfo=UTC) if field.data else None


def _within_years(field):
    """Refuse a time outside FIRST_YEAR..LAST_YEAR."""
    if field.data and not FIRST_YEAR <= field.data.year <= LAST_YEAR:
        raise ValidationError(f"Choose a time between {FIRST_YEAR} and {LAST_YEAR}.")
