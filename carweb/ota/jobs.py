"""Update jobs: the contract's state machine (pure), and its transitions applied to stored jobs.

Every change is a compare-and-set on the job's current state, so a report, the timeout
sweep and an operator racing for one job cannot both win, and running a step twice (the
bridge retries a batch after a database error) changes nothing the second time.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta

from carweb import live
from carweb.models import Device, UpdateJob
from carweb.models.firmware import FORWARD_STATES, TERMINAL_STATES
from carweb.models.user import utcnow
from carweb.ota.protocol import REPORTED_STATES

log = logging.getLogger(__name__)
TRANSITION, PROGRESS, IGNORE = "transition", "progress", "ignore"
RANK = {state: rank for rank, state in enumerate(FORWARD_STATES)}
# Jobs an operator's cancel stops; of those, the ones whose device has the command.
CANCELABLE_STATES = FORWARD_STATES[: RANK["UPDATING"]]
TOLD_STATES = CANCELABLE_STATES[1:]
DEVICE_JOBS_SHOWN = 20
JOBS_PAGE = 100  # jobs (and rollouts) one image page lists; older ones are a link away
CONFLICT_TRIES = 5  # reads of a job that keeps moving while a report is applied
MOVED = object()  # the job changed between its read and the conditional write


@dataclass(frozen=True)
class Decision:
    """What a report does to a job: a transition, a progress update, or nothing (and why)."""

    action: str
    reason: str = ""


def decide(current, reported, progress=None, current_progress=None):
    """Decide what a report of state `reported` does to a job in state `current` (None: no such job)."""
    if current is None:
        return Decision(IGNORE, "unknown job")
    if current in TERMINAL_STATES:
        return Decision(IGNORE, f"the job is already {current}")
    if reported not in REPORTED_STATES:
        return Decision(IGNORE, f"{reported} is not a state devices report")
    if reported in ("FAILED", "REJECTED") or RANK[reported] > RANK[current]:
        return Decision(TRANSITION)
    if (
        reported == current
        and progress is not None
        and (current_progress is None or progress > current_progress)
    ):
        return Decision(PROGRESS)
    if reported == current:
        return Decision(IGNORE, "duplicate")
    return Decision(IGNORE, f"backwards from {current}")


def history_entry(state, at, report=None, msg=None, note=None):
    """One transition as stored in a job's history."""
    return {"state": state, "at": at, "report": report, "msg": msg, "note": note}


def find_job(job_id, device_id):
    """The job with this id if it belongs to this device, else None."""
    job = UpdateJob.objects(pk=job_id).first()
    return job if job is not None and job.device_id == device_id else None


def latest_jobs(device_id, limit=DEVICE_JOBS_SHOWN):
    """A device's latest update jobs, newest first (its page and its live updates show these)."""
    return UpdateJob.objects(device_id=device_id).order_by("-updated_at").limit(limit)


def _modify(job, expect=None, **changes):
    """Apply `changes` if the job is still as loaded (state, plus `expect`); the new job or None."""
    changed = UpdateJob.objects(pk=job.pk, state=job.state, **(expect or {})).modify(new=True, **changes)
    if changed is not None:
        live.publish_job(changed)
    return changed


def _deadline(at, step_timeout):
    """When a job that heard from its device at `at` times out."""
    return at + timedelta(seconds=step_timeout)


def apply_report(job, report, msg_id, at, step_timeout):
    """Apply a device's report (stored message `msg_id`, received `at`); the job it made, or None.

    A report already in the job's history (a retried batch) returns the job as it is, so
    what follows from it runs again; backwards, duplicate and late reports change nothing.
    A job that moved since it was read (another bridge took the device's previous report,
    or the sweep timed it out) is read again and the report decided again: with K bridges
    a device's reports can be handled out of order and at the same time.
    """
    for _ in range(CONFLICT_TRIES):
        outcome = _apply_once(job, report, msg_id, at, step_timeout)
        if outcome is not MOVED:
            return outcome
        job = UpdateJob.objects(pk=job.pk).first()
        if job is None:
            return None
    log.warning("report %s on job %s not applied: the job kept moving", report.state, job.pk)
    return None


def _apply_once(job, report, msg_id, at, step_timeout):
    """apply_report against the job as read: the new job, None, or MOVED when it changed meanwhile."""
    if any(entry.get("msg") == msg_id for entry in job.history):
        if job.state == "UPDATED" == report.state:
            _record_version(job, report)
        return job
    decision = decide(job.state, report.state, report.progress, job.progress)
    if decision.action == IGNORE:
        log.info("report %s on job %s ignored: %s", report.state, job.pk, decision.reason)
        return None
    if report.state == "UPDATED":
        # The device first: once the job says UPDATED, the device shows the new version.
        _record_version(job, report)
    changed = _report_changes(job, report, msg_id, at, step_timeout, decision.action)
    return MOVED if changed is None else changed


def _record_version(job, report):
    """The device now runs the version it reported, else the job's."""
    Device.objects(device_id=job.device_id).update(set__fw_version=report.version or job.version)


def _report_changes(job, report, msg_id, at, step_timeout, action):
    """Store a progress update or a transition caused by a report."""
    if action == PROGRESS:
        return _modify(
            job,
            set__progress=report.progress,
            set__updated_at=at,
            set__timeout_at=_deadline(at, step_timeout),
        )
    changes = {
        "set__state": report.state,
        "set__updated_at": at,
        "push__history": history_entry(report.state, at, report.as_dict(), msg_id),
    }
    if report.progress is not None:
        changes["set__progress"] = report.progress
    if report.error is not None:
        changes["set__error"] = report.error
    if report.state in TERMINAL_STATES:
        changes["unset__timeout_at"] = True
    else:
        changes["set__timeout_at"] = _deadline(at, step_timeout)
    return _modify(job, **changes)


def mark_sent(job, step_timeout, at=None):
    """A queued job, or a failed one being retried, is sent again: SENT, one more attempt."""
    at = at or utcnow()
    # The attempts too: a sweep holding a stale FAILED copy must not resend a job that has
    # been sent and has failed again meanwhile.
    return _modify(
        job,
        expect={"attempts": job.attempts},
        set__state="SENT",
        inc__attempts=1,
        set__updated_at=at,
        set__timeout_at=_deadline(at, step_timeout),
        unset__progress=True,
        unset__error=True,
        push__history=history_entry("SENT", at, note=f"attempt {job.attempts + 1}"),
    )


def time_out(job, step_timeout, at=None):
    """A job that heard nothing from its device until its deadline becomes TIMED_OUT."""
    at = at or utcnow()
    error = f"no report for {step_timeout} s"
    return _modify(
        job,
        expect={"timeout_at": job.timeout_at},
        set__state="TIMED_OUT",
        set__error=error,
        set__updated_at=at,
        unset__timeout_at=True,
        push__history=history_entry("TIMED_OUT", at, note=error),
    )


def cancel_job(job, at=None):
    """A job that has not reached UPDATING becomes CANCELED; None for any other job."""
    if job.state not in CANCELABLE_STATES:
        return None
    at = at or utcnow()
    return _modify(
        job,
        set__state="CANCELED",
        set__updated_at=at,
        unset__timeout_at=True,
        push__history=history_entry("CANCELED", at, note="rollout canceled"),
    )


def image_jobs(firmware_id, before=None, limit=JOBS_PAGE):
    """Up to `limit` jobs of an image, newest first, older than the job id `before`; and whether more exist."""
    after = {} if before is None else {"id__lt": before}
    return page_of(UpdateJob.objects(firmware_id=firmware_id, **after), "-id", limit)


def page_of(query, order, limit):
    """The first `limit` jobs of `query` in `order`, and whether more follow (one read of limit + 1)."""
    jobs = list(query.order_by(order).limit(limit + 1))
    return jobs[:limit], len(jobs) > limit
