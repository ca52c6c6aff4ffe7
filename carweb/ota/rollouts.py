"""Rollouts: one firmware to many devices in waves, halting when a wave fails too often.

A wave is a cumulative percentage of the targets. The next wave starts when every job of
the current one is terminal and its failure rate is under the threshold; otherwise the
rollout halts until an operator resumes (go on with the next wave) or cancels it.
"""

import random

from bson import ObjectId

from carweb import live
from carweb.models import Device, Firmware, Rollout, UpdateJob
from carweb.models.firmware import (
    DEFAULT_FAILURE_THRESHOLD,
    DEFAULT_RETRY_LIMIT,
    DEFAULT_STEP_TIMEOUT,
    FAILURE_STATES,
    JOB_STATES,
    TERMINAL_STATES,
)
from carweb.models.user import utcnow
from carweb.ota.delivery import send_cancels, send_jobs
from carweb.ota.jobs import TOLD_STATES, cancel_job, page_of

MAX_RETRIES = 10
MAX_STEP_TIMEOUT = 7 * 24 * 3600
ROLLOUT_JOBS_PAGE = 100  # jobs one rollout page lists, by device id


class RolloutError(ValueError):
    """A rollout request carweb refuses; the message says why (shown to operators as is)."""


def parse_waves(text):
    """Parse `10,50,100` into increasing percentages ending at 100, or raise RolloutError."""
    try:
        waves = [int(part) for part in str(text).replace(" ", "").split(",") if part != ""]
    except ValueError as exc:
        raise RolloutError(f"waves must be whole percentages such as 10,50,100, not {text!r}") from exc
    check_waves(waves)
    return waves


def check_waves(waves):
    """Waves must be increasing percentages from 1 to 100, the last one 100."""
    if not waves or any(not 1 <= w <= 100 for w in waves):
        raise RolloutError("wave percentages must be from 1 to 100")
    if any(b <= a for a, b in zip(waves, waves[1:], strict=False)):
        raise RolloutError("wave percentages must increase")
    if waves[-1] != 100:
        raise RolloutError("the last wave must be 100 %")


def check_settings(failure_threshold, retry_limit, step_timeout):
    """The threshold is a fraction in (0, 1]; retries 0..10; the step timeout 1 s..7 days."""
    if not 0 < failure_threshold <= 1:
        raise RolloutError("the failure threshold must be above 0 and at most 1")
    if not 0 <= retry_limit <= MAX_RETRIES:
        raise RolloutError(f"retries must be from 0 to {MAX_RETRIES}")
    if not 1 <= step_timeout <= MAX_STEP_TIMEOUT:
        raise RolloutError(f"the step timeout must be from 1 to {MAX_STEP_TIMEOUT} seconds")


def step_timeouts():
    """A lookup of rollouts' step timeouts that reads each rollout once; the default for one that is gone."""
    known = {}

    def step_timeout_of(rollout_id):
        """The step timeout of this rollout."""
        if rollout_id not in known:
            rollout = Rollout.objects(pk=rollout_id).only("step_timeout").first()
            known[rollout_id] = rollout.step_timeout if rollout else DEFAULT_STEP_TIMEOUT
        return known[rollout_id]

    return step_timeout_of


def select_targets(device_ids=None, all_devices=False, from_version=None):
    """The devices a rollout targets: a list in its given order, or every device (on a version), shuffled.

    Shuffled so that the first wave is a random sample of the fleet, not always the same devices.
    """
    if device_ids:
        targets = list(dict.fromkeys(d.strip() for d in device_ids if d.strip()))
        known = {d["device_id"] for d in Device.objects(device_id__in=targets).only("device_id").as_pymongo()}
        unknown = [d for d in targets if d not in known]
        if unknown:
            raise RolloutError(f"unknown device: {', '.join(unknown[:3])}{' …' if len(unknown) > 3 else ''}")
        return targets
    if all_devices or from_version:
        query = Device.objects(fw_version=from_version) if from_version else Device.objects
        targets = [d["device_id"] for d in query.only("device_id").as_pymongo()]
        random.shuffle(targets)
        if not targets:
            raise RolloutError(f"no device is on version {from_version}" if from_version else "no devices")
        return targets
    raise RolloutError("choose devices, all devices, or all devices on a version")


def wave_ends(total, waves):
    """How many targets the waves cover cumulatively (at least one more in each wave that gets any)."""
    return [-(-percent * total // 100) for percent in waves]


def wave_of(position, ends):
    """The wave of the target at `position`."""
    return next(index for index, end in enumerate(ends) if position < end)


def _check_free(targets):
    """Refuse targets that are already being updated by another rollout."""
    busy = UpdateJob.objects(device_id__in=targets).only("device_id", "state").as_pymongo()
    unfinished = sorted({j["device_id"] for j in busy if j["state"] not in TERMINAL_STATES})
    if unfinished:
        raise RolloutError(f"device {unfinished[0]} is already being updated by another rollout")


def create_rollout(
    app,
    firmware,
    targets,
    waves=(100,),
    failure_threshold=DEFAULT_FAILURE_THRESHOLD,
    retry_limit=DEFAULT_RETRY_LIMIT,
    step_timeout=DEFAULT_STEP_TIMEOUT,
    created_by=None,
):
    """Store a rollout and one QUEUED job per target, then send the first wave.

    The jobs are stored before the rollout: the sweep advances every RUNNING rollout it
    finds, and a rollout without its jobs yet would look like a finished wave to it.
    """
    if not targets:
        raise RolloutError("a rollout needs at least one device")
    check_waves(list(waves))
    check_settings(failure_threshold, retry_limit, step_timeout)
    _check_free(targets)
    rollout = Rollout(
        id=ObjectId(),
        firmware_id=firmware.pk,
        targets=list(targets),
        device_count=len(targets),
        waves=list(waves),
        failure_threshold=failure_threshold,
        retry_limit=retry_limit,
        step_timeout=step_timeout,
        created_by=created_by,
    )
    ends = wave_ends(rollout.device_count, rollout.waves)
    jobs = [
        UpdateJob(
            rollout_id=rollout.pk,
            firmware_id=firmware.pk,
            title=firmware.title,
            version=firmware.version,
            device_id=device_id,
            wave=wave_of(position, ends),
        )
        for position, device_id in enumerate(targets)
    ]
    UpdateJob.objects.insert(jobs, load_bulk=False)
    try:
        rollout.save(force_insert=True)
    except Exception:
        UpdateJob.objects(rollout_id=rollout.pk).delete()  # no QUEUED jobs left to block these devices
        raise
    return advance_rollout(app, rollout.pk)


def next_wave(rollout):
    """The index of the next wave that has devices, or None after the last."""
    ends = wave_ends(rollout.device_count, rollout.waves)
    later = [i for i in range(rollout.current_wave + 1, len(ends)) if ends[i] > ends[i - 1]]
    return later[0] if later else None


def _update_rollout(rollout, expected_state, **changes):
    """Change a rollout if it is still in `expected_state` and wave; emit and return it, else None."""
    changed = Rollout.objects(pk=rollout.pk, state=expected_state, current_wave=rollout.current_wave).modify(
        new=True, set__updated_at=utcnow(), **changes
    )
    if changed is not None:
        live.publish_rollout(changed)
    return changed


def retryable(rollout, job):
    """A FAILED or TIMED_OUT job is sent again while its attempts stay within the retry limit."""
    return job.state in ("FAILED", "TIMED_OUT") and job.attempts <= rollout.retry_limit


def advance_rollout(app, rollout_id):
    """Move a running rollout on: send waiting and retryable jobs, then halt, go on or complete.

    Called after every batch of reports and by the timeout sweep; does nothing twice.
    """
    rollout = Rollout.objects(pk=rollout_id).exclude("targets").first()
    if rollout is None or rollout.state != "RUNNING":
        return rollout
    jobs = list(UpdateJob.objects(rollout_id=rollout.pk, wave=rollout.current_wave))
    waiting = [job for job in jobs if job.state == "QUEUED" or retryable(rollout, job)]
    if waiting:
        send_jobs(app, rollout, Firmware.objects(pk=rollout.firmware_id).first(), waiting)
        return rollout
    if any(job.state not in TERMINAL_STATES for job in jobs):
        return rollout
    failures = sum(job.state in FAILURE_STATES for job in jobs)
    if jobs and failures / len(jobs) >= rollout.failure_threshold:
        return _update_rollout(rollout, "RUNNING", set__state="HALTED") or rollout
    return _start_next_wave(app, rollout, "RUNNING") or rollout


def _start_next_wave(app, rollout, expected_state):
    """Complete the rollout after its last wave, else make the next wave current and send it."""
    following = next_wave(rollout)
    if following is None:
        return _update_rollout(rollout, expected_state, set__state="COMPLETED")
    moved = _update_rollout(rollout, expected_state, set__state="RUNNING", set__current_wave=following)
    return advance_rollout(app, moved.pk) if moved is not None else None


def resume_rollout(app, rollout_id):
    """An operator accepts a halted wave's failures: the rollout goes on with its next wave."""
    rollout = Rollout.objects(pk=rollout_id).first()
    if rollout is None:
        raise RolloutError(f"unknown rollout {rollout_id}")
    if rollout.state != "HALTED":
        raise RolloutError(f"only a halted rollout can be resumed; this one is {rollout.state}")
    resumed = _start_next_wave(app, rollout, "HALTED")
    if resumed is None:
        raise RolloutError("the rollout changed meanwhile; reload and try again")
    return resumed


def cancel_rollout(app, rollout_id):
    """Stop a rollout: jobs that have not reached UPDATING become CANCELED, their devices are told."""
    rollout = Rollout.objects(pk=rollout_id).first()
    if rollout is None:
        raise RolloutError(f"unknown rollout {rollout_id}")
    if rollout.state == "COMPLETED":
        raise RolloutError("a completed rollout cannot be canceled")
    if rollout.state != "CANCELED" and _update_rollout(rollout, rollout.state, set__state="CANCELED") is None:
        raise RolloutError("the rollout changed meanwhile; try again")
    told = []
    for job in UpdateJob.objects(rollout_id=rollout.pk):
        if cancel_job(job) is not None and job.state in TOLD_STATES:
            told.append(job)
    send_cancels(app, told)
    return Rollout.objects(pk=rollout.pk).first()


def rollout_status(rollout):
    """A rollout and its jobs' states as plain data (the CLI's `status --json`)."""
    jobs = UpdateJob.objects(rollout_id=rollout.pk).only("device_id", "state").order_by("wave", "device_id")
    return {
        "id": str(rollout.pk),
        "state": rollout.state,
        "jobs": [{"device_id": job.device_id, "state": job.state} for job in jobs],
    }


def job_tally(rollout_id):
    """How many jobs of a rollout are in each (wave, state): [(wave, state, count)].

    Grouped by the database on the `rollout_wave` index, so a page of a rollout of any
    size reads counts, not jobs.
    """
    pipeline = [
        {"$match": {"rollout": rollout_id}},
        {"$group": {"_id": {"wave": "$wave", "state": "$state"}, "count": {"$sum": 1}}},
    ]
    rows = UpdateJob._get_collection().aggregate(pipeline)
    return [(row["_id"]["wave"], row["_id"]["state"], row["count"]) for row in rows]


def rollout_progress(rollout, tally):
    """Counts per job state and, per wave, its size, finished and failed jobs (from `job_tally`)."""
    counts = dict.fromkeys(JOB_STATES, 0)
    ends = wave_ends(rollout.device_count, rollout.waves)
    waves = [
        {"index": i, "percent": p, "size": end - start, "done": 0, "failed": 0}
        for i, (p, start, end) in enumerate(zip(rollout.waves, [0, *ends], ends, strict=False))
    ]
    for wave, state, count in tally:
        counts[state] += count
        waves[wave]["done"] += count if state in TERMINAL_STATES else 0
        waves[wave]["failed"] += count if state in FAILURE_STATES else 0
    return {"counts": counts, "waves": [w for w in waves if w["size"]]}


def rollout_jobs(rollout_id, after=None, limit=ROLLOUT_JOBS_PAGE):
    """Up to `limit` jobs of a rollout by device id, after the device id `after`; and whether more exist."""
    later = {} if after is None else {"device_id__gt": after}
    return page_of(UpdateJob.objects(rollout_id=rollout_id, **later), "device_id", limit)
