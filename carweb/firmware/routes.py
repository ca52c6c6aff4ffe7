"""Views of the firmware blueprint: store, rollouts, one device's update, and the public download."""

from bson import ObjectId
from flask import (
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wsgi import FileWrapper

from carweb import audit
from carweb.auth import role_required
from carweb.bridge.topics import MAX_DEVICE_ID_LENGTH
from carweb.firmware import app_object, bp
from carweb.firmware.forms import ConfirmForm, DeviceUpdateForm, RolloutForm, UploadForm
from carweb.live import job_summary
from carweb.models import Device, Firmware, Rollout
from carweb.models.user import ADMINS, OPERATORS
from carweb.ota.delivery import InvalidToken, downloadable_firmware
from carweb.ota.jobs import JOBS_PAGE, image_jobs
from carweb.ota.rollouts import (
    RolloutError,
    cancel_rollout,
    create_rollout,
    job_tally,
    parse_waves,
    resume_rollout,
    rollout_jobs,
    rollout_progress,
)
from carweb.ota.store import (
    FirmwareError,
    FirmwareTooLarge,
    delete_firmware,
    max_image_bytes,
    open_firmware,
    store_firmware,
    trusted_keys,
)

DOWNLOAD_BUFFER = 64 * 1024


def firmware_or_404(firmware_id):
    """The firmware with this id, or a 404 page."""
    return document_or_404(Firmware, firmware_id)


def rollout_or_404(rollout_id):
    """The rollout with this id, or a 404 page."""
    return document_or_404(Rollout, rollout_id)


def document_or_404(document, object_id, exclude=()):
    """A document by its id from a URL (without the fields `exclude`); anything but 24 hex digits is a 404."""
    if not ObjectId.is_valid(object_id):
        abort(404)
    return document.objects(pk=object_id).exclude(*exclude).first() or abort(404)


def _wants_json():
    """The upload script asks for JSON so it can show progress and errors in place."""
    return request.headers.get("X-Requested-With") == "XMLHttpRequest"


@bp.errorhandler(413)
def too_large(error):
    """An upload over CARWEB_MAX_FIRMWARE_MB: say what the limit is."""
    limit = current_app.config["CARWEB_MAX_FIRMWARE_MB"]
    error = RequestEntityTooLarge(f"Firmware images may be at most {limit} MiB.")
    if _wants_json():
        return jsonify(errors=[error.description]), 413
    return render_template("errors/413.html", error=error), 413


@bp.route("")
def index():
    """Every image, newest first, and the latest rollouts."""
    return render_template(
        "firmware/index.html",
        images=Firmware.objects.order_by("-created_at"),
        rollouts=Rollout.objects.exclude("targets").order_by("-created_at").limit(20),
        labels={f.pk: f.label for f in Firmware.objects.only("title", "version")},
    )


@bp.route("/upload", methods=["GET", "POST"])
@role_required(OPERATORS)
def upload():
    """Upload an image: streamed into the store with its SHA-256; JSON answers for the upload script."""
    form = UploadForm()
    if form.validate_on_submit():
        try:
            firmware = store_firmware(
                form.file.data.stream,
                form.title.data,
                form.version.data,
                notes=form.notes.data,
                created_by=current_user.email,
                max_bytes=max_image_bytes(current_app.config),
                signature=form.signature_text(),
                keys=trusted_keys(current_app.config),
            )
        except FirmwareTooLarge:
            abort(413)
        except FirmwareError as exc:
            form.file.errors.append(str(exc))
        else:
            audit.record("firmware uploaded", firmware.label, size=firmware.size, sha256=firmware.sha256)
            flash(f"{firmware.label} uploaded (SHA-256 {firmware.sha256}).", "success")
            location = url_for("firmware.show", firmware_id=firmware.pk)
            return jsonify(location=location) if _wants_json() else redirect(location)
    if _wants_json():
        return jsonify(errors=form.error_list()), 400
    return render_template("firmware/upload.html", form=form), 400 if form.errors else 200


@bp.route("/<firmware_id>")
def show(firmware_id):
    """An image, its newest rollouts and the jobs that send it, newest first by keyset pages."""
    firmware = firmware_or_404(firmware_id)
    before = request.args.get("before")
    if before is not None and not ObjectId.is_valid(before):
        abort(400, "Bad page cursor.")
    jobs, more = image_jobs(firmware.pk, ObjectId(before) if before else None)
    rollouts = Rollout.objects(firmware_id=firmware.pk).exclude("targets").order_by("-created_at")
    return render_template(
        "firmware/show.html",
        firmware=firmware,
        rollouts=rollouts.limit(JOBS_PAGE),
        jobs=[job_summary(j) for j in jobs],
        older=str(jobs[-1].pk) if more else None,
    )


@bp.route("/<firmware_id>/delete", methods=["GET", "POST"])
@role_required(ADMINS)
def delete(firmware_id):
    """Ask, then delete an image with its rollouts; refused while any of its jobs is unfinished."""
    firmware = firmware_or_404(firmware_id)
    form = ConfirmForm()
    if form.validate_on_submit():
        try:
            delete_firmware(firmware)
        except FirmwareError as exc:
            flash(str(exc), "error")
            return redirect(url_for("firmware.show", firmware_id=firmware_id))
        audit.record("firmware deleted", firmware.label)
        flash(f"{firmware.label} deleted.", "success")
        return redirect(url_for("firmware.index"))
    return render_template("firmware/delete.html", firmware=firmware, form=form)


@bp.route("/<firmware_id>/rollout", methods=["GET", "POST"])
@role_required(OPERATORS)
def new_rollout(firmware_id):
    """Choose devices, waves and limits, then start a rollout of this image."""
    firmware = firmware_or_404(firmware_id)
    form = RolloutForm()
    if form.validate_on_submit():
        try:
            rollout = create_rollout(
                app_object(),
                firmware,
                form.targets,
                waves=parse_waves(form.waves.data),
                failure_threshold=form.threshold.data,
                retry_limit=form.retries.data,
                step_timeout=form.timeout.data,
                created_by=current_user.email,
            )
        except RolloutError as exc:
            form.target.errors.append(str(exc))
        else:
            audit.record("rollout started", rollout.pk, firmware=firmware.label, devices=rollout.device_count)
            flash(f"Rollout of {firmware.label} to {rollout.device_count} devices started.", "success")
            return redirect(url_for("firmware.rollout", rollout_id=rollout.pk))
    return render_template("firmware/rollout_new.html", firmware=firmware, form=form)


@bp.route("/rollouts/<rollout_id>")
def rollout(rollout_id):
    """A rollout: counts per state, progress per wave, its jobs by pages of device ids, its controls; live."""
    item = rollout_or_404(rollout_id)
    after = request.args.get("after")
    if after is not None and not 0 < len(after) <= MAX_DEVICE_ID_LENGTH:
        abort(400, "Bad page cursor.")
    jobs, more = rollout_jobs(item.pk, after)
    return render_template(
        "firmware/rollout.html",
        rollout=item,
        firmware=Firmware.objects(pk=item.firmware_id).first(),
        jobs=[job_summary(j) for j in jobs],
        more=jobs[-1].device_id if more else None,
        progress=rollout_progress(item, job_tally(item.pk)),
        form=ConfirmForm(),
    )


@bp.route("/rollouts/<rollout_id>/<action>", methods=["POST"])
@role_required(OPERATORS)
def control(rollout_id, action):
    """Resume a halted rollout or cancel a running or halted one."""
    item = rollout_or_404(rollout_id)
    steps = {"resume": resume_rollout, "cancel": cancel_rollout}
    if action not in steps or not ConfirmForm().validate_on_submit():
        abort(400)
    try:
        steps[action](app_object(), item.pk)
        audit.record("rollout resumed" if action == "resume" else "rollout canceled", item.pk)
        flash(f"Rollout {'resumed' if action == 'resume' else 'canceled'}.", "success")
    except RolloutError as exc:
        flash(str(exc), "error")
    return redirect(url_for("firmware.rollout", rollout_id=rollout_id))


@bp.route("/devices/<device_id>/update", methods=["POST"])
@role_required(OPERATORS)
def update_device(device_id):
    """Start an update of one device (a rollout of one) from the device's page."""
    device = Device.objects(device_id=device_id).first() or abort(404)
    form = DeviceUpdateForm().set_choices()
    if form.validate_on_submit():
        try:
            single = create_rollout(
                app_object(),
                firmware_or_404(form.firmware.data),
                [device.device_id],
                created_by=current_user.email,
            )
            audit.record("rollout started", single.pk, devices=1, device=device.device_id)
            flash("Update started.", "success")
        except RolloutError as exc:
            flash(str(exc), "error")
    else:
        flash("Choose a firmware image.", "error")
    return redirect(url_for("devices.show", device_id=device_id))


@bp.route("/download/<token>")
def download(token):
    """Public: a device downloads its job's image with a signed token; Range and ETag honoured."""
    try:
        firmware = downloadable_firmware(current_app.config, token)
    except InvalidToken:
        abort(403)
    reader = open_firmware(firmware, DOWNLOAD_BUFFER)
    response = Response(
        FileWrapper(reader, DOWNLOAD_BUFFER),
        mimetype="application/octet-stream",
        direct_passthrough=True,
        headers={"Content-Disposition": f'attachment; filename="firmware-{firmware.pk}.bin"'},
    )
    response.content_length = firmware.size
    response.set_etag(firmware.sha256)
    response.cache_control.no_store = True
    return response.make_conditional(request.environ, accept_ranges=True, complete_length=firmware.size)
