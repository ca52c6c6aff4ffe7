"""Forms of the firmware blueprint."""

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import (
    FloatField,
    IntegerField,
    RadioField,
    SelectChoice,
    SelectField,
    StringField,
    SubmitField,
    TextAreaField,
)
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional, ValidationError

from carweb.models import Firmware
from carweb.models.firmware import DEFAULT_FAILURE_THRESHOLD, DEFAULT_RETRY_LIMIT, DEFAULT_STEP_TIMEOUT
from carweb.ota.rollouts import MAX_RETRIES, MAX_STEP_TIMEOUT, RolloutError, parse_waves, select_targets
from carweb.ota.signing import MAX_SIGNATURE_FILE
from carweb.ota.store import FirmwareError

# The model's own limits, so the form and the store refuse the same values.
TITLE_MAX, VERSION_MAX, NOTES_MAX = (
    Firmware._fields[name].max_length for name in ("title", "version", "notes")
)
TARGET_CHOICES = [
    SelectChoice("devices", "These devices"),
    SelectChoice("all", "All devices"),
    SelectChoice("version", "All devices on version"),
]


class UploadForm(FlaskForm):
    """A new firmware image: title + version must be new."""

    title = StringField("Title", validators=[DataRequired(), Length(max=TITLE_MAX)])
    version = StringField("Version", validators=[DataRequired(), Length(max=VERSION_MAX)])
    file = FileField("Image", validators=[FileRequired("Choose the image file.")])
    signature = FileField("Signature (.sig from `firmware sign`)")
    notes = TextAreaField("Release notes", validators=[Optional(), Length(max=NOTES_MAX)])
    submit = SubmitField("Upload")

    def signature_text(self):
        """The signature file's text, or None when none was sent; FirmwareError when it cannot be one."""
        upload = self.signature.data
        if not upload or not getattr(upload, "filename", None):
            return None
        data = upload.read(MAX_SIGNATURE_FILE + 1)
        if len(data) > MAX_SIGNATURE_FILE:
            raise FirmwareError("the signature file is not one `firmware sign` makes")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FirmwareError("the signature file is not one `firmware sign` makes") from exc

    def validate_version(self, field):
        """Title + version identify an image: refuse one that exists."""
        if Firmware.objects(title=(self.title.data or "").strip(), version=field.data.strip()).first():
            raise ValidationError(f"{self.title.data} {field.data} already exists.")

    def error_list(self):
        """Every error as `Field: message`, for the upload script."""
        return [
            f"{self[name].label.text}: {error}" for name, errors in self.errors.items() for error in errors
        ]


class RolloutForm(FlaskForm):
    """Which devices get an image, in which waves, with which limits."""

    target = RadioField("Devices", choices=TARGET_CHOICES, default="devices")
    devices = TextAreaField("Device ids (comma, space or one per line)", validators=[Optional()])
    from_version = StringField("Current version", validators=[Optional(), Length(max=VERSION_MAX)])
    waves = StringField("Waves (cumulative %)", default="100", validators=[DataRequired()])
    threshold = FloatField(
        "Failure threshold (0–1)",
        default=DEFAULT_FAILURE_THRESHOLD,
        validators=[InputRequired(), NumberRange(0.01, 1)],
    )
    retries = IntegerField(
        "Retries", default=DEFAULT_RETRY_LIMIT, validators=[InputRequired(), NumberRange(0, MAX_RETRIES)]
    )
    timeout = IntegerField(
        "Step timeout (s)",
        default=DEFAULT_STEP_TIMEOUT,
        validators=[InputRequired(), NumberRange(1, MAX_STEP_TIMEOUT)],
    )
    submit = SubmitField("Start rollout")

    def validate_waves(self, field):
        """Percentages that increase and end at 100."""
        try:
            parse_waves(field.data)
        except RolloutError as exc:
            raise ValidationError(str(exc)) from exc

    def validate_target(self, field):
        """The chosen devices must exist (resolved once here, kept for the view)."""
        ids = (self.devices.data or "").replace(",", " ").split()
        try:
            self.targets = select_targets(
                device_ids=ids if field.data == "devices" else None,
                all_devices=field.data == "all",
                from_version=(self.from_version.data or "").strip() if field.data == "version" else None,
            )
        except RolloutError as exc:
            raise ValidationError(str(exc)) from exc


class DeviceUpdateForm(FlaskForm):
    """Start an update of one device from its page."""

    firmware = SelectField("Firmware", validators=[DataRequired()])
    submit = SubmitField("Start update")

    def set_choices(self):
        """Every image, newest first."""
        self.firmware.choices = [
            SelectChoice(str(f.pk), f.label)
            for f in Firmware.objects.order_by("-created_at").only("title", "version")
        ]
        return self


class ConfirmForm(FlaskForm):
    """A button that only carries the CSRF token (delete, resume, cancel)."""

    submit = SubmitField("Confirm")
