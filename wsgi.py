"""WSGI entry point for gunicorn: gevent patches the standard library first, then the app is built."""

from gevent import monkey

monkey.patch_all()

from carweb import create_app  # noqa: E402

app = create_app()
