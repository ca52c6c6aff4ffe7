"""Status reports from devices: the bridge hands them over, jobs and rollouts move on."""

import logging

from carweb.models import Rollout
from carweb.ota.jobs import apply_report, find_job
from carweb.ota.protocol import ProtocolError, parse_status_report
from carweb.ota.rollouts import advance_rollout

log = logging.getLogger(__name__)


def handle_status_reports(app, docs):
    """Bridge handler for `+/firmware/status`: apply each stored report, then advance the rollouts touched.

    Runs inside the bridge writer's retry loop, so every step is safe to run twice.
    """
    timeouts, touched = {}, []
    for doc in docs:
        try:
            report = parse_status_report(doc.get("data"))
        except ProtocolError as exc:
            log.info("status report on %s ignored: %s", doc["topic"], exc)
            continue
        job = find_job(report.job, doc["device_id"])
        if job is None:
            log.info("status report of %s for unknown job %s ignored", doc["device_id"], report.job)
            continue
        if job.rollout_id not in timeouts:
            rollout = Rollout.objects(pk=job.rollout_id).only("step_timeout").first()
            timeouts[job.rollout_id] = rollout.step_timeout if rollout else 600
        if apply_report(job, report, doc["_id"], doc["received_at"], timeouts[job.rollout_id]) is not None:
            touched.append(job.rollout_id)
    for rollout_id in dict.fromkeys(touched):
        advance_rollout(app, rollout_id)
