"""The timeout sweep: a greenlet of the server process that times out silent jobs and moves rollouts on."""

import logging
from datetime import UTC, datetime

import gevent

from carweb.models import Rollout, UpdateJob
from carweb.models.user import utcnow
from carweb.ota.jobs import time_out
from carweb.ota.rollouts import advance_rollout, step_timeouts

log = logging.getLogger(__name__)
# A lower bound keeps the deadline query a bounded index range: SecantusDB scans an
# open-ended `$lt` from the start of the index, through every job without a deadline.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_BACKOFF = 60


def time_out_silent_jobs(now=None):
    """Every job whose deadline has passed becomes TIMED_OUT; return them."""
    now = now or utcnow()
    step_timeout_of, timed_out = step_timeouts(), []
    for job in UpdateJob.objects(timeout_at__gt=EPOCH, timeout_at__lt=now):
        changed = time_out(job, step_timeout_of(job.rollout_id), now)
        if changed is not None:
            timed_out.append(changed)
    return timed_out


def sweep(app):
    """Time out silent jobs, then let every running rollout retry, send, halt or go on."""
    time_out_silent_jobs()
    for rollout in Rollout.objects(state="RUNNING").only("id"):
        advance_rollout(app, rollout.pk)


def run_sweeper(app):
    """Sweep every CARWEB_OTA_SWEEP_SECONDS for as long as the process runs, backing off on errors."""
    period = app.config["CARWEB_OTA_SWEEP_SECONDS"]
    delay = period
    with app.app_context():
        while True:
            gevent.sleep(delay)
            try:
                sweep(app)
                delay = period
            except Exception as exc:  # noqa: BLE001 - the sweep must outlive a database outage
                delay = min(max(delay, 1) * 2, MAX_BACKOFF)
                log.warning("firmware sweep failed (%s); next try in %s s", exc, delay)
