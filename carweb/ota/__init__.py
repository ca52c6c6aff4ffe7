"""Firmware updates: the job state machine, rollouts in waves, delivery of images and commands."""

from functools import partial

from carweb.background import register_background_task
from carweb.bridge.dispatch import register_topic_handler
from carweb.ota.delivery import answer_chunk_requests
from carweb.ota.protocol import CHUNK_REQUEST_FILTER, STATUS_FILTER
from carweb.ota.reports import handle_status_reports
from carweb.ota.sweep import run_sweeper


def init_app(app):
    """Wire ota into the bridge (status reports, chunk requests) and the server's background work."""
    register_topic_handler(app, STATUS_FILTER, partial(handle_status_reports, app))
    register_topic_handler(app, CHUNK_REQUEST_FILTER, partial(answer_chunk_requests, app))
    register_background_task(app, run_sweeper)
