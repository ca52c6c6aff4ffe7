"""`python -m carweb.bridge`: the bridge as its own process, emitting through the message queue."""

from gevent import monkey

monkey.patch_all()

import signal  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402

from carweb import create_app  # noqa: E402
from carweb.config import Config  # noqa: E402


def main():
    """Run index creation and the bridge until SIGTERM or SIGINT."""
    config = Config()
    config.CARWEB_BRIDGE = "off"  # this process runs the bridge itself, below
    app = create_app(config)
    from carweb.background import start_background

    start_background(app, bridge=True)
    stop = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    stop.wait()


if __name__ == "__main__":
    main()
