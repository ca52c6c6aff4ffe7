"""The update job state machine: every transition, and reports that must change nothing."""

import itertools
import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from bson import ObjectId

from carweb.bridge.dispatch import dispatch
from carweb.models import Device, Firmware, Message, Rollout, UpdateJob
from carweb.models.firmware import JOB_STATES, TERMINAL_STATES
from carweb.ota.jobs import IGNORE, PROGRESS, TRANSITION, cancel_job, decide, mark_sent, time_out
from carweb.ota.protocol import REPORTED_STATES
from carweb.ota.rollouts import create_rollout
from carweb.ota.sweep import sweep
from tests.ingest_support import store_as_bridge

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)

# What each state may move to on a device's report (forward skips allowed, failure from anywhere).
FORWARD = {
    "QUEUED": {"DOWNLOADING", "DOWNLOADED", "VERIFIED", "UPDATING", "UPDATED", "FAILED", "REJECTED"},
    "SENT": {"DOWNLOADING", "DOWNLOADED", "VERIFIED", "UPDATING", "UPDATED", "FAILED", "REJECTED"},
    "DOWNLOADING": {"DOWNLOADED", "VERIFIED", "UPDATING", "UPDATED", "FAILED", "REJECTED"},
    "DOWNLOADED": {"VERIFIED", "UPDATING", "UPDATED", "FAILED", "REJECTED"},
    "VERIFIED": {"UPDATING", "UPDATED", "FAILED", "REJECTED"},
    "UPDATING": {"UPDATED", "FAILED", "REJECTED"},
}


@pytest.mark.parametrize(("current", "reported"), list(itertools.product(JOB_STATES, REPORTED_STATES)))
def test_every_report_in_every_state_follows_the_contract(current, reported):
    """Forward (skips included) and failures apply; same state is a duplicate; lower is backwards; terminal stays."""
    decision = decide(current, reported)
    if current in TERMINAL_STATES:
        assert decision.action == IGNORE and current in decision.reason
    elif reported in FORWARD[current]:
        assert decision.action == TRANSITION
    elif reported == current:
        assert decision == decide(current, reported) and decision.reason == "duplicate"
    else:
        assert decision.action == IGNORE and decision.reason.startswith("backwards")


def test_forward_table_covers_every_unfinished_state():
    """The table above names every state a report can still move."""
    assert set(FORWARD) == {s for s in JOB_STATES if s not in TERMINAL_STATES}


@pytest.mark.parametrize("reported", ["QUEUED", "SENT", "TIMED_OUT", "CANCELED", "DONE", None])
def test_states_devices_do_not_report_are_ignored(reported):
    """Only the contract's report states move a job."""
    assert decide("SENT", reported).action == IGNORE


def test_report_for_unknown_job_is_ignored():
    """No job: nothing to move."""
    assert decide(None, "UPDATED") == decide(None, "FAILED")
    assert decide(None, "UPDATED").action == IGNORE and decide(None, "UPDATED").reason == "unknown job"


def test_higher_progress_in_the_same_state_is_a_progress_update():
    """DOWNLOADING 40 after DOWNLOADING 20 updates progress; 20 again or less is a duplicate."""
    assert decide("DOWNLOADING", "DOWNLOADING", 40, 20).action == PROGRESS
    assert decide("DOWNLOADING", "DOWNLOADING", 40, None).action == PROGRESS
    assert decide("DOWNLOADING", "DOWNLOADING", 20, 20).action == IGNORE
    assert decide("DOWNLOADING", "DOWNLOADING", 10, 20).action == IGNORE


# --- applied to stored jobs, through the bridge's own store-then-dispatch path -------------


def make_job(state="SENT", device_id="car-1", attempts=1, step_timeout=600):
    """A stored firmware, rollout and one job of `device_id` in `state`."""
    Device(device_id=device_id, fw_version="1.0.0").save()
    firmware = Firmware(
        title=f"ecu-{device_id}", version="2.0.0", size=10, sha256="a" * 64, file_id=ObjectId()
    ).save()
    rollout = Rollout(
        firmware_id=firmware.pk, targets=[device_id], device_count=1, waves=[100], step_timeout=step_timeout
    ).save()
    job = UpdateJob(
        rollout_id=rollout.pk,
        firmware_id=firmware.pk,
        title="ecu",
        version="2.0.0",
        device_id=device_id,
        wave=0,
        state=state,
        attempts=attempts,
        timeout_at=T0 + timedelta(seconds=step_timeout)
        if state not in TERMINAL_STATES + ("QUEUED",)
        else None,
    ).save()
    return job


def report(app, job, state, seconds=1, device_id=None, **fields):
    """Store a status report as the bridge does and hand it to the handlers; return the stored message."""
    return deliver(app, device_id or job.device_id, {"job": str(job.pk), "state": state, **fields}, seconds)


def deliver(app, device_id, payload, seconds=0):
    """Store a JSON payload on the device's status topic and hand it to the handlers; the stored message."""
    topic = f"{device_id}/firmware/status"
    stored = store_as_bridge(topic, json.dumps(payload).encode(), T0 + timedelta(seconds=seconds))
    dispatch(app, stored)
    return stored[0] if stored else None


def reload(job):
    """The job as stored now."""
    return UpdateJob.objects(pk=job.pk).first()


def test_report_moves_the_job_and_records_time_and_report(app):
    """SENT -> DOWNLOADING: the new state, its time and the report are in the history."""
    job = make_job("SENT")
    message = report(app, job, "DOWNLOADING", seconds=3, progress=5)
    stored = reload(job)
    assert stored.state == "DOWNLOADING" and stored.progress == 5
    entry = stored.history[-1]
    assert entry["state"] == "DOWNLOADING"
    assert entry["at"] == T0 + timedelta(seconds=3)
    assert entry["report"] == {"job": str(job.pk), "state": "DOWNLOADING", "progress": 5}
    assert entry["msg"] == message["_id"]
    assert stored.timeout_at == T0 + timedelta(seconds=3 + 600)


def test_every_forward_step_is_recorded_in_order(app):
    """A device reporting every state leaves one history entry per step."""
    job = make_job("SENT")
    steps = ["DOWNLOADING", "DOWNLOADED", "VERIFIED", "UPDATING", "UPDATED"]
    for seconds, state in enumerate(steps, start=1):
        report(app, job, state, seconds=seconds, version="2.0.0")
    stored = reload(job)
    assert [h["state"] for h in stored.history] == steps
    assert [h["at"] for h in stored.history] == [T0 + timedelta(seconds=s) for s in range(1, 6)]
    assert stored.timeout_at is None


def test_forward_skip_to_updated_sets_the_reported_version(app):
    """SENT -> UPDATED directly; the device's firmware becomes the version it reported."""
    job = make_job("SENT")
    report(app, job, "UPDATED", version="2.0.1-rc")
    assert reload(job).state == "UPDATED"
    assert Device.objects(device_id="car-1").first().fw_version == "2.0.1-rc"


def test_updated_without_a_version_sets_the_firmware_version(app):
    """A report without `version` means the image's own version."""
    job = make_job("UPDATING")
    report(app, job, "UPDATED")
    assert Device.objects(device_id="car-1").first().fw_version == "2.0.0"


def test_backwards_report_is_stored_but_changes_nothing(app):
    """DOWNLOADING after VERIFIED: the message is kept, the job is untouched."""
    job = make_job("VERIFIED")
    before = reload(job)
    message = report(app, job, "DOWNLOADING")
    assert Message.objects(pk=message["_id"]).count() == 1
    after = reload(job)
    assert (after.state, after.history, after.updated_at) == (before.state, before.history, before.updated_at)


def test_duplicate_report_changes_nothing(app):
    """The same state again (a device repeating itself) adds no transition."""
    job = make_job("SENT")
    report(app, job, "DOWNLOADED", seconds=1)
    report(app, job, "DOWNLOADED", seconds=2)
    stored = reload(job)
    assert [h["state"] for h in stored.history] == ["DOWNLOADED"]
    assert stored.history[0]["at"] == T0 + timedelta(seconds=1)


def test_the_same_stored_report_handled_twice_is_applied_once(app):
    """The bridge retries a batch after a database error: the second run adds nothing."""
    job = make_job("SENT")
    message = report(app, job, "UPDATED", version="2.0.0")
    Device.objects(device_id="car-1").update(set__fw_version="1.0.0")  # as if the first run stopped here
    dispatch(app, [message])
    stored = reload(job)
    assert [h["state"] for h in stored.history] == ["UPDATED"]
    assert Device.objects(device_id="car-1").first().fw_version == "2.0.0"


@pytest.mark.parametrize("terminal", TERMINAL_STATES)
def test_report_after_a_terminal_state_changes_nothing(app, terminal):
    """Once UPDATED, FAILED, REJECTED, TIMED_OUT or CANCELED, a job stays so."""
    job = make_job(terminal)
    report(app, job, "UPDATED", version="9.9.9")
    report(app, job, "FAILED", error="late")
    stored = reload(job)
    assert stored.state == terminal and stored.history == []
    assert Device.objects(device_id="car-1").first().fw_version == "1.0.0"


def test_report_for_an_unknown_job_is_stored_and_changes_nothing(app):
    """A job id carweb never issued: the message is kept, no job changes."""
    job = make_job("SENT")
    ghost = SimpleNamespace(pk=ObjectId(), device_id="car-1")
    message = report(app, ghost, "UPDATED", version="6.6.6")
    assert Message.objects(pk=message["_id"]).count() == 1
    assert reload(job).state == "SENT"
    assert Device.objects(device_id="car-1").first().fw_version == "1.0.0"


def test_report_on_another_devices_job_changes_nothing(app):
    """A device cannot move a job of another device."""
    job = make_job("SENT")
    report(app, job, "UPDATED", device_id="intruder", version="6.6.6")
    assert reload(job).state == "SENT"


@pytest.mark.parametrize(
    "payload", [{"state": "UPDATED"}, {"job": "nope", "state": "UPDATED"}, {"state": "UPDATED", "job": 5}]
)
def test_malformed_reports_are_stored_and_change_nothing(app, payload):
    """Reports without a usable job id are kept as messages only."""
    job = make_job("SENT")
    report(app, job, "UPDATED")  # a valid one first, to show the handler still works afterwards
    other = make_job("SENT", device_id="car-2")
    assert deliver(app, "car-2", payload) is not None
    assert reload(other).state == "SENT" and reload(job).state == "UPDATED"


def test_failed_report_keeps_the_devices_reason(app):
    """FAILED with an error: the reason is on the job and in its history."""
    job = make_job("VERIFIED")
    report(app, job, "FAILED", error="booted the previous image: watchdog")
    stored = reload(job)
    assert stored.state in ("FAILED", "SENT")  # a retry may already have sent it again
    failed = next(h for h in stored.history if h["state"] == "FAILED")
    assert failed["report"]["error"] == "booted the previous image: watchdog"


def test_progress_report_moves_the_deadline_without_a_transition(app):
    """DOWNLOADING 10 then 60: progress 60, a later deadline, one history entry."""
    job = make_job("SENT")
    report(app, job, "DOWNLOADING", seconds=1, progress=10)
    report(app, job, "DOWNLOADING", seconds=50, progress=60)
    stored = reload(job)
    assert stored.progress == 60 and len(stored.history) == 1
    assert stored.timeout_at == T0 + timedelta(seconds=650)


def test_time_out_applies_only_while_the_deadline_is_unchanged(app):
    """A report that moved the deadline meanwhile wins over the sweep's stale view."""
    job = make_job("SENT")
    stale = reload(job)
    report(app, job, "DOWNLOADING", seconds=5, progress=1)
    assert time_out(stale, 600) is None
    fresh = reload(job)
    timed_out = time_out(fresh, 600)
    assert timed_out.state == "TIMED_OUT" and timed_out.error == "no report for 600 s"
    assert timed_out.timeout_at is None and timed_out.history[-1]["state"] == "TIMED_OUT"


def test_mark_sent_counts_an_attempt_and_sets_a_deadline(app):
    """QUEUED -> SENT, attempt 1; a TIMED_OUT job retried -> SENT, attempt 2."""
    job = make_job("QUEUED", attempts=0)
    sent = mark_sent(job, 30, at=T0)
    assert (sent.state, sent.attempts, sent.timeout_at) == ("SENT", 1, T0 + timedelta(seconds=30))
    retried = mark_sent(time_out(sent, 30), 30)
    assert (retried.state, retried.attempts) == ("SENT", 2)
    assert [h["state"] for h in retried.history] == ["SENT", "TIMED_OUT", "SENT"]


def test_mark_sent_from_a_stale_copy_of_a_job_that_failed_again_does_nothing(app):
    """Sent again and failed again meanwhile: a stale FAILED copy (attempt 1) sends nothing."""
    job = make_job("FAILED", attempts=1)
    stale = reload(job)
    retried = mark_sent(reload(job), 30)
    UpdateJob.objects(pk=retried.pk).update(set__state="FAILED")
    assert mark_sent(stale, 30) is None
    assert (reload(job).state, reload(job).attempts) == ("FAILED", 2)


@pytest.mark.parametrize("state", JOB_STATES)
def test_cancel_stops_only_jobs_before_updating(app, state):
    """QUEUED to VERIFIED become CANCELED; UPDATING and terminal jobs are left alone."""
    job = make_job(state)
    canceled = cancel_job(reload(job))
    if state in ("QUEUED", "SENT", "DOWNLOADING", "DOWNLOADED", "VERIFIED"):
        assert canceled.state == "CANCELED" and canceled.timeout_at is None
    else:
        assert canceled is None and reload(job).state == state


def test_a_sweep_as_the_rollout_appears_does_not_skip_its_first_wave(app, monkeypatch):
    """The sweep runs the moment the rollout is stored: its jobs are there, so wave 1 is sent, not skipped."""
    devices = [f"car-{n}" for n in range(10)]
    for device_id in devices:
        Device(device_id=device_id).save()
    firmware = Firmware(title="ecu", version="2.0.0", size=10, sha256="a" * 64, file_id=ObjectId()).save()
    save = Rollout.save

    def save_then_sweep(rollout, *args, **kwargs):
        saved = save(rollout, *args, **kwargs)
        sweep(app)
        return saved

    monkeypatch.setattr(Rollout, "save", save_then_sweep)
    rollout = create_rollout(app, firmware, devices, waves=(10, 50, 100))
    assert (rollout.state, rollout.current_wave) == ("RUNNING", 0)
    jobs = UpdateJob.objects(rollout_id=rollout.pk)
    assert (
        sorted((job.wave, job.state, job.attempts) for job in jobs)
        == [(0, "SENT", 1)] + [(1, "QUEUED", 0)] * 4 + [(2, "QUEUED", 0)] * 5
    )


def test_a_report_against_a_job_that_moved_meanwhile_is_decided_again(app):
    """Two bridges: one read the job at DOWNLOADING while the other moved it on; UPDATED still lands."""
    from carweb.ota.jobs import apply_report
    from carweb.ota.protocol import parse_status_report

    job = make_job("SENT")
    report(app, job, "DOWNLOADING", seconds=1)
    stale = reload(job)  # what the first bridge read
    report(app, job, "DOWNLOADED", seconds=2)  # the second bridge's report, applied meanwhile
    updated = parse_status_report({"job": str(job.pk), "state": "UPDATED", "version": "2.0.0"})
    assert apply_report(stale, updated, ObjectId(), T0 + timedelta(seconds=3), 600).state == "UPDATED"
    assert [h["state"] for h in reload(job).history][-3:] == ["DOWNLOADING", "DOWNLOADED", "UPDATED"]
