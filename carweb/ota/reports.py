"""Status reports from devices: the bridge hands them over, jobs and rollouts move on."""

import logging

from carweb.ota.jobs import apply_report, find_job
from carweb.ota.protocol import ProtocolError, parse_status_report
from carweb.ota.rollouts import advance_rollout, step_timeouts

log = logging.getLogger(__name__)


def handle_status_reports(app, docs):
    """Bridge handler for `+/firmware/status`: apply each stored report, then advance the rollouts touched.

    Runs inside the bridge writer's retry loop, so every step is safe to run twice.
    """
    step_timeout_of, touched = step_timeouts(), []
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
        step_timeout = step_timeout_of(job.rollout_id)
        if apply_report(job, report, doc["_id"], doc["received_at"], step_timeout) is not None:
            touched.append(job.rollout_id)
    for rollout_id in dict.fromkeys(touched):
        advance_rollout(app, rollout_id)
