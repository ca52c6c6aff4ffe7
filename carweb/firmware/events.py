"""Socket.IO handlers for the firmware pages (the connection itself is checked in devices/events.py)."""

from bson import ObjectId

from carweb.auth import sessions
from carweb.bridge.topics import MAX_DEVICE_ID_LENGTH
from carweb.extensions import socketio
from carweb.live import device_firmware_room, image_room, job_summary, join, rollout_room, rollout_summary
from carweb.models import Device, Rollout, UpdateJob
from carweb.ota.jobs import image_jobs, latest_jobs
from carweb.ota.rollouts import ROLLOUT_JOBS_PAGE, job_tally, rollout_progress


@socketio.on("watch_rollout")
@sessions.live_login_required
def watch_rollout(request):
    """Browser -> server: join a rollout's room ("rollout" and "job" events); get its state and progress.

    `request` is {"rollout_id": ..., "job_ids": [...]} with the ids of the jobs the page
    shows (at most one page); the reply is {"ok": bool, "rollout": {...}, "progress":
    {"counts", "waves"}, "jobs": [...]} with those jobs' current states, so a page that was
    rendered or disconnected a moment ago misses nothing. Pages ask again to recount.
    """
    request = request if isinstance(request, dict) else {}
    rollout_id, job_ids = request.get("rollout_id"), request.get("job_ids") or []
    if not isinstance(rollout_id, str) or not ObjectId.is_valid(rollout_id):
        return {"ok": False, "error": "bad rollout id"}
    valid = isinstance(job_ids, list) and len(job_ids) <= ROLLOUT_JOBS_PAGE
    if not valid or not all(isinstance(i, str) and ObjectId.is_valid(i) for i in job_ids):
        return {"ok": False, "error": "bad job ids"}
    rollout = Rollout.objects(pk=rollout_id).exclude("targets").first()
    if rollout is None:
        return {"ok": False, "error": "no such rollout"}
    if not join(rollout_room(rollout_id)):
        return {"ok": False, "error": "too many rooms"}
    jobs = UpdateJob.objects(rollout_id=rollout.pk, id__in=[ObjectId(i) for i in job_ids]) if job_ids else []
    return {
        "ok": True,
        "rollout": rollout_summary(rollout),
        "progress": rollout_progress(rollout, job_tally(rollout.pk)),
        "jobs": [job_summary(j) for j in jobs],
    }


@socketio.on("watch_firmware")
@sessions.live_login_required
def watch_firmware(request):
    """Browser -> server: join an image's room ("job" events); reply with its newest jobs (one page).

    `request` is {"firmware_id": ...}; the reply is {"ok": bool, "jobs": [...]}, newest first.
    """
    firmware_id = request.get("firmware_id") if isinstance(request, dict) else None
    if not isinstance(firmware_id, str) or not ObjectId.is_valid(firmware_id):
        return {"ok": False, "error": "bad firmware id"}
    if not join(image_room(firmware_id)):
        return {"ok": False, "error": "too many rooms"}
    return {
        "ok": True,
        "jobs": [job_summary(j) for j in image_jobs(ObjectId(firmware_id))[0]],
    }


@socketio.on("watch_device_firmware")
@sessions.live_login_required
def watch_device_firmware(request):
    """Browser -> server: join a device's firmware room ("job" events); reply with its latest jobs.

    `request` is {"device_id": ...}; the reply is {"ok": bool, "fw_version": ..., "jobs": [...]},
    newest first.
    """
    device_id = request.get("device_id") if isinstance(request, dict) else None
    if not isinstance(device_id, str) or not 0 < len(device_id) <= MAX_DEVICE_ID_LENGTH:
        return {"ok": False, "error": "bad device id"}
    if not join(device_firmware_room(device_id)):
        return {"ok": False, "error": "too many rooms"}
    device = Device.objects(device_id=device_id).only("fw_version").first()
    return {
        "ok": True,
        "fw_version": device.fw_version if device else None,
        "jobs": [job_summary(j) for j in latest_jobs(device_id)],
    }
