"""API views of firmware images, rollouts and update jobs; operators start, resume and cancel rollouts."""

from flask import abort
from flask_login import current_user
from flask_smorest import Blueprint

from carweb import audit
from carweb.api.v1 import guard_api_request
from carweb.api.v1.schemas import (
    FirmwareOut,
    FirmwarePage,
    IdPageArgs,
    JobDetail,
    JobPage,
    RolloutCreate,
    RolloutDetail,
    RolloutJobArgs,
    RolloutListArgs,
    RolloutPage,
)
from carweb.auth import role_required
from carweb.config import API_PREFIX
from carweb.firmware import app_object
from carweb.firmware.routes import document_or_404, firmware_or_404
from carweb.models import Firmware, Rollout, UpdateJob
from carweb.models.user import OPERATORS
from carweb.ota.jobs import page_of
from carweb.ota.rollouts import (
    RolloutError,
    cancel_rollout,
    create_rollout,
    job_tally,
    resume_rollout,
    rollout_jobs,
    rollout_progress,
    select_targets,
)

blp = Blueprint("api_firmware", __name__, url_prefix=API_PREFIX, description="Firmware images and rollouts")
blp.before_request(guard_api_request)


LONG_FIELDS = ("targets",)  # a rollout's device ids: up to 100,000 of them, never shown


def newest_first(query, cursor, limit):
    """A page of documents newest first, below the id `cursor`, with the cursor of the next page."""
    older = {} if cursor is None else {"id__lt": cursor}
    items, more = page_of(query.filter(**older), "-id", limit)
    return {"items": items, "next_cursor": str(items[-1].pk) if more else None}


def rollout_detail(rollout_id):
    """A rollout (without its list of targets) with its jobs counted per state and wave; 404 if none."""
    rollout = document_or_404(Rollout, rollout_id, exclude=LONG_FIELDS)
    progress = rollout_progress(rollout, job_tally(rollout.pk))
    rollout.counts, rollout.wave_progress = progress["counts"], progress["waves"]
    return rollout


@blp.route("/firmware")
@blp.arguments(IdPageArgs, location="query", as_kwargs=True)
@blp.response(200, FirmwarePage)
def list_firmware(limit, cursor=None):
    """Images, newest first."""
    return newest_first(Firmware.objects, cursor, limit)


@blp.route("/firmware/<firmware_id>")
@blp.response(200, FirmwareOut)
def get_firmware(firmware_id):
    """One image."""
    return firmware_or_404(firmware_id)


@blp.route("/rollouts")
@blp.arguments(RolloutListArgs, location="query", as_kwargs=True)
@blp.response(200, RolloutPage)
def list_rollouts(limit, cursor=None, firmware_id=None):
    """Rollouts, newest first, of every image or of one."""
    query = Rollout.objects.exclude(*LONG_FIELDS)
    if firmware_id is not None:
        query = query.filter(firmware_id=firmware_id)
    return newest_first(query, cursor, limit)


@blp.route("/rollouts", methods=["POST"])
@role_required(OPERATORS)
@blp.arguments(RolloutCreate)
@blp.response(201, RolloutDetail)
def start_rollout(args):
    """Send an image to devices in waves (operator): 422 if the request names what is not there, 409 if busy."""
    firmware = Firmware.objects(pk=args["firmware_id"]).first() or abort(
        422, "No image has this firmware_id."
    )
    try:
        targets = select_targets(args.get("devices"), args["all_devices"], args.get("from_version"))
    except RolloutError as exc:
        abort(422, str(exc))
    try:
        rollout = create_rollout(
            app_object(),
            firmware,
            targets,
            waves=args["waves"],
            failure_threshold=args["failure_threshold"],
            retry_limit=args["retry_limit"],
            step_timeout=args["step_timeout"],
            created_by=current_user.email,
        )
    except RolloutError as exc:
        abort(409, str(exc))
    audit.record("rollout started", rollout.pk, firmware=firmware.label, devices=rollout.device_count)
    return rollout_detail(rollout.pk)


@blp.route("/rollouts/<rollout_id>")
@blp.response(200, RolloutDetail)
def get_rollout(rollout_id):
    """A rollout with its jobs counted per state and per wave."""
    return rollout_detail(rollout_id)


@blp.route("/rollouts/<rollout_id>/jobs")
@blp.arguments(RolloutJobArgs, location="query", as_kwargs=True)
@blp.response(200, JobPage)
def list_rollout_jobs(rollout_id, limit, cursor=None):
    """A rollout's jobs by device id."""
    rollout = document_or_404(Rollout, rollout_id, exclude=LONG_FIELDS)
    jobs, more = rollout_jobs(rollout.pk, cursor, limit)
    return {"items": jobs, "next_cursor": jobs[-1].device_id if more else None}


@blp.route("/rollouts/<rollout_id>/resume", methods=["POST"])
@role_required(OPERATORS)
@blp.response(200, RolloutDetail)
def resume(rollout_id):
    """Resume a halted rollout with its next wave (operator); 409 unless it is halted."""
    return control_rollout(rollout_id, resume_rollout, "rollout resumed")


@blp.route("/rollouts/<rollout_id>/cancel", methods=["POST"])
@role_required(OPERATORS)
@blp.response(200, RolloutDetail)
def cancel(rollout_id):
    """Cancel a running or halted rollout (operator); 409 once it has completed."""
    return control_rollout(rollout_id, cancel_rollout, "rollout canceled")


def control_rollout(rollout_id, step, action):
    """Apply `step` (resume_rollout or cancel_rollout) to a rollout, record `action`, and show the result."""
    rollout = document_or_404(Rollout, rollout_id, exclude=LONG_FIELDS)
    try:
        step(app_object(), rollout.pk)
    except RolloutError as exc:
        abort(409, str(exc))
    audit.record(action, rollout.pk)
    return rollout_detail(rollout.pk)


@blp.route("/jobs/<job_id>")
@blp.response(200, JobDetail)
def get_job(job_id):
    """One device's update job with every step it went through."""
    return document_or_404(UpdateJob, job_id)
