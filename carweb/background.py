"""Work a server process runs beside its requests: index creation, then the bridge and other tasks."""

import logging

import gevent

from carweb.bridge.service import Bridge
from carweb.upgrade import prepare_database

log = logging.getLogger(__name__)
BRIDGE_KEY = "carweb.bridge"
TASKS_KEY = "carweb.background_tasks"


def register_background_task(app, task):
    """Have `task(app)` run in its own greenlet of every server process, once indexes exist."""
    app.extensions.setdefault(TASKS_KEY, []).append(task)


def start_background(app, bridge=True):
    """Create indexes once (retrying until MongoDB answers), then start the bridge and the tasks."""
    service = Bridge(app) if bridge else None
    app.extensions[BRIDGE_KEY] = service
    gevent.spawn(_prepare_and_start, app, service)
    return service


def running_bridge(app):
    """The bridge of this process, or None where it runs elsewhere."""
    return app.extensions.get(BRIDGE_KEY)


def bridge_state(app, device_id):
    """What this process's bridge holds of a device (ahead of its document), or None."""
    bridge = running_bridge(app)
    return bridge.book.get(device_id) if bridge is not None else None


def _prepare_and_start(app, service):
    """Indexes and upgrades of stored data happen here, outside the bridge, once per process."""
    delay = 1
    with app.app_context():
        while True:
            try:
                prepare_database()
                break
            except Exception as exc:  # noqa: BLE001 - keep trying until MongoDB answers
                log.warning("creating indexes failed (%s); retrying in %s s", exc, delay)
                if service is not None:
                    service.state = "waiting for database"
                gevent.sleep(delay)
                delay = min(delay * 2, 30)
    if service is not None:
        service.start()
    for task in app.extensions.get(TASKS_KEY, ()):
        gevent.spawn(task, app)
