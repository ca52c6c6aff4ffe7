"""The bridge supervisor restarts a dead bridge with back-off, and /healthz says so."""

import gevent

from carweb import metrics
from carweb.background import BRIDGE_KEY
from carweb.bridge.service import Bridge


class CrashingBridge(Bridge):
    """A bridge whose run crashes the first `crashes` times, then idles."""

    def __init__(self, app, crashes):
        super().__init__(app)
        self.crashes, self.runs = crashes, 0

    def _run_once(self):
        """Crash, or stay up like a connected bridge."""
        self.runs += 1
        if self.runs <= self.crashes:
            raise RuntimeError("writer bug")
        self.state, self.mqtt_state = "running", "connected"
        gevent.sleep(3600)


def test_dead_bridge_is_restarted_and_reported(app, client):
    """A crash shows as `restarting` (503) without its error text; the next run recovers (200)."""
    restarts = metrics.bridge_restarts._value.get()
    bridge = CrashingBridge(app, crashes=1)
    app.extensions[BRIDGE_KEY] = bridge
    bridge.start()
    try:
        gevent.sleep(0.1)
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json["bridge"] == "restarting" and "writer bug" not in response.get_data(as_text=True)
        assert metrics.bridge_restarts._value.get() == restarts + 1
        gevent.sleep(1.2)  # first back-off is one second
        response = client.get("/healthz")
        assert response.status_code == 200 and response.json["mqtt"] == "connected" and bridge.runs == 2
    finally:
        bridge._supervisor.kill()


def test_back_off_doubles_while_the_bridge_keeps_dying(app):
    """Crash after crash, the supervisor waits 1 s, then 2 s, ... (not a hot loop)."""
    bridge = CrashingBridge(app, crashes=10)
    bridge.start()
    try:
        gevent.sleep(3.5)  # crashes at 0 s, 1 s, 3 s; the next is due at 7 s
        assert bridge.runs == 3
    finally:
        bridge._supervisor.kill()
