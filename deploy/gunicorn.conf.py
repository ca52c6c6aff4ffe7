"""gunicorn settings for carweb; every value can be overridden by environment or flags."""

import os

# One worker per process: each worker would run its own bridge with the same MQTT client
# id, and Socket.IO sessions need sticky routing. Scale with more processes behind nginx.
workers = 1
worker_class = "gevent"
worker_connections = int(os.environ.get("CARWEB_WORKER_CONNECTIONS", "1000"))
bind = f"{os.environ.get('CARWEB_HOST', '127.0.0.1')}:{os.environ.get('CARWEB_PORT', '8000')}"
graceful_timeout = int(os.environ.get("CARWEB_GRACEFUL_TIMEOUT", "5"))
timeout = 60
accesslog = "-" if os.environ.get("CARWEB_ACCESS_LOG", "1") not in ("0", "false", "no") else None
errorlog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# gunicorn 27's control socket in ~/.gunicorn/ is shared by every instance of a user.
control_socket_disable = True


def post_worker_init(worker):
    """On a graceful stop (SIGTERM: a HUP's old worker, a restart), stop the embedded bridge first.

    A HUP starts the new worker before the old one has finished: without this, both
    bridges held the MQTT session in turn for a moment and both stored the broker's
    redeliveries of what the old one had not acknowledged (tests/test_reload.py).
    Stopped first, the old bridge leaves those messages to the new one, once each.
    Device sockets are closed at once with 1012 (restart), so devices reconnect to
    another process instead of waiting out the graceful timeout.
    """
    import signal

    import gevent

    from carweb.background import running_bridge
    from carweb.devices.gateway import close_device_sockets

    exit_gracefully = worker.handle_exit

    def stop_bridge_then_exit(signum, frame):
        bridge = running_bridge(worker.wsgi)
        if bridge is not None:
            gevent.spawn(bridge.stop)
        gevent.spawn(close_device_sockets, worker.wsgi)
        exit_gracefully(signum, frame)

    signal.signal(signal.SIGTERM, stop_bridge_then_exit)
