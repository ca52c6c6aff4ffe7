"""Fixtures: real SecantusDB and Mosquitto once per session, a fresh database per test."""

import os
import re
import subprocess
import threading
import time
import uuid

import mongoengine
import pymongo
import pytest
import requests
import socketio
from flask import g

from carweb import create_app
from carweb.config import TestConfig
from carweb.devstack import (
    device_client,
    free_port,
    mongodb_uri,
    run_flask,
    start_mosquitto,
    start_secantus,
    start_web,
    stop_processes,
    wait_for_port,
)
from carweb.models import User, ensure_indexes

PASSWORD = "correct horse battery"


class Services:
    """Addresses of the database and broker started for this test session."""

    def __init__(self, db_port, mqtt_port, workdir):
        self.db_port = db_port
        self.mqtt_port = mqtt_port
        self.workdir = workdir
        self.mqtt_url = f"mqtt://127.0.0.1:{mqtt_port}"

    def db_uri(self, name):
        """The URI of database `name` on the session's server."""
        return mongodb_uri(self.db_port, name)


@pytest.fixture(scope="session")
def services(tmp_path_factory):
    """SecantusDB (in memory) and Mosquitto on free ports, for the whole session.

    In memory every document must fit in SecantusDB's cache: the default 1 GB was
    outgrown once the 100,000-message export and scale-out tests joined (WT_CACHE_FULL),
    so the session's server gets 6 GB (a cap, not a reservation). On disk instead, it
    once stopped answering in the middle of the poison flood test.
    """
    workdir = tmp_path_factory.mktemp("services")
    db_port, mqtt_port = free_port(), free_port()
    db_log = open(workdir / "secantusdb.log", "wb")  # noqa: SIM115
    broker_log = open(workdir / "mosquitto.log", "wb")  # noqa: SIM115
    processes = [start_secantus(db_port, ":memory:", log_file=db_log, cache_size="6G")]
    try:
        processes.append(start_mosquitto(mqtt_port, workdir / "mosquitto", log_file=broker_log))
        yield Services(db_port, mqtt_port, workdir)
    finally:
        stop_processes(processes)
        db_log.close()
        broker_log.close()


@pytest.fixture
def app(services):
    """An app on a database of its own, dropped after the test; no bridge."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    config = TestConfig(MONGODB_URI=services.db_uri(name), MQTT_URL=services.mqtt_url)
    application = create_app(config)
    # The test holds an app context, which Flask reuses for each request, so `g` would
    # carry one request's user and CSRF token into the next (another client's too).
    application.before_request_funcs.setdefault(None, []).insert(0, _forget_the_last_request)
    with application.app_context():
        ensure_indexes()
        yield application
    mongoengine.disconnect()
    with pymongo.MongoClient(services.db_uri(name)) as mongo:
        mongo.drop_database(name)


def _forget_the_last_request():
    """Drop what Flask-Login and Flask-WTF keep in `g` for one request."""
    g.pop("_login_user", None)
    g.pop("csrf_token", None)


@pytest.fixture
def client(app):
    """Flask test client."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """Flask CLI runner."""
    return app.test_cli_runner()


def csrf_token(html):
    """The CSRF token of the first form of a page."""
    match = re.search(r'<input[^>]*name="csrf_token"[^>]*value="([^"]+)"', html)
    assert match, "page has no CSRF token"
    return match.group(1)


class AuthActions:
    """Log in and out through the real login form."""

    def __init__(self, client):
        self._client = client

    def create(self, email="admin@example.com", role="admin", password=PASSWORD):
        """Store a user."""
        return User.create_or_update(email, password, role=role)

    def login(self, email="admin@example.com", password=PASSWORD, role="admin"):
        """Create the user if needed and log in; returns the response."""
        if User.find_by_email(email) is None:
            self.create(email, role=role, password=password)
        token = csrf_token(self._client.get("/login").get_data(as_text=True))
        return self._client.post("/login", data={"email": email, "password": password, "csrf_token": token})

    def token(self, path="/devices"):
        """A CSRF token from a page the logged-in user can see."""
        return csrf_token(self._client.get(path).get_data(as_text=True))


@pytest.fixture
def auth(client):
    """Login helper bound to the test client."""
    return AuthActions(client)


class LiveServer:
    """carweb under gunicorn with the gevent worker and the embedded bridge, as in production."""

    def __init__(self, url, db_uri, db_name, env):
        self.url = url
        self.db_uri = db_uri
        self.db_name = db_name
        self.env = env
        self.mongo = pymongo.MongoClient(db_uri)

    def db(self):
        """A pymongo handle on the server's database."""
        return self.mongo[self.db_name]

    def create_user(self, email, password=PASSWORD, role="admin"):
        """Create a user with the real CLI (`flask create-user --password-stdin`)."""
        run_flask(
            self.env,
            "create-user",
            email,
            "--role",
            role,
            "--password-stdin",
            capture=True,
            stdin=password + "\n",
        )

    def login_session(self, email="live-admin@example.com", password=PASSWORD):
        """A requests session logged in through the form."""
        session = requests.Session()
        token = csrf_token(session.get(f"{self.url}/login").text)
        response = session.post(
            f"{self.url}/login", data={"email": email, "password": password, "csrf_token": token}
        )
        assert response.url.endswith("/devices"), response.url
        return session

    def socket(self, session=None):
        """A Socket.IO client connected over WebSocket with `session`'s cookies (none: anonymous)."""
        client = socketio.Client(reconnection=False)
        headers = {"Cookie": cookie_header(session)} if session is not None else {}
        client.connect(self.url, headers=headers, transports=["websocket"], wait_timeout=5)
        return client


def cookie_header(session):
    """The Cookie header a browser with the session's cookies would send."""
    return "; ".join(f"{cookie.name}={cookie.value}" for cookie in session.cookies)


def server_env(services, db_name, port, **extra):
    """The environment of a carweb server process under test."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MONGODB_", "MQTT_", "CARWEB_"))
    }
    env.update(
        SECRET_KEY="live-test-secret",
        MONGODB_URI=services.db_uri(db_name),
        MQTT_URL=services.mqtt_url,
        MQTT_CLIENT_ID=f"carweb-test-{uuid.uuid4().hex[:8]}",
        CARWEB_HOST="127.0.0.1",
        CARWEB_PORT=str(port),
        CARWEB_ACCESS_LOG="0",
        CARWEB_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        # Every test's logins come from 127.0.0.1, many to one account of the shared live server.
        CARWEB_LOGIN_LIMIT_ACCOUNT="1000 per minute",
        CARWEB_LOGIN_LIMIT_ADDRESS="1000 per minute",
    )
    env.update(extra)
    return env


def start_gunicorn(env, log_path):
    """Start gunicorn as `make run` does, logging to `log_path`, and wait until it is healthy."""
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        return start_web(env, log_file=log)


@pytest.fixture
def web_server(services, tmp_path):
    """Start carweb servers of the test's own: `web_server(db_name, **env)` is (url, process, env); all stop after."""
    processes = []

    def start(db_name, **extra):
        port = free_port()
        env = server_env(services, db_name, port, **extra)
        processes.append(start_gunicorn(env, tmp_path / f"web-{port}.log"))
        return f"http://127.0.0.1:{port}", processes[-1], env

    yield start
    stop_processes(processes)


@pytest.fixture
def redis_url(tmp_path):
    """A Redis of the test's own on a free port."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port, process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_processes([process])


@pytest.fixture(scope="session")
def live_server(services, tmp_path_factory):
    """One production-like carweb process for the session; tests use their own device ids."""
    db_name = f"live_{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = server_env(services, db_name, port)
    process = start_gunicorn(env, tmp_path_factory.mktemp("live") / "gunicorn.log")
    server = LiveServer(f"http://127.0.0.1:{port}", services.db_uri(db_name), db_name, env)
    server.create_user("live-admin@example.com")
    try:
        yield server
    finally:
        server.mongo.close()
        stop_processes([process])


@pytest.fixture
def device_id():
    """A device id no other test uses."""
    return str(uuid.uuid4())


@pytest.fixture
def publisher(services):
    """A connected MQTT client for publishing as a device; `publish` waits for the broker's ack."""
    client = device_client(services.mqtt_port, "test-pub")
    yield client
    client.disconnect()
    client.loop_stop()


def wait_until(predicate, timeout=10.0, interval=0.05):
    """Poll `predicate` until it returns a truthy value; return that value or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.fixture
def fleet(services):
    """Start simulated cars in a thread: `fleet(count, **update_behaviour)` returns their device ids."""
    from carweb.simulator import Fleet
    from carweb.simulator_updates import UpdateBehaviour

    running = []

    def start(count, rate=0.05, **updates):
        """Run `count` cars with a fresh id prefix until the test ends."""
        cars = Fleet(
            services.mqtt_url, count, rate, prefix=uuid.uuid4().hex, updates=UpdateBehaviour(**updates)
        )
        thread = threading.Thread(target=cars.run, daemon=True)
        thread.start()
        running.append((cars, thread))
        return [car.device_id for car in cars.cars]

    yield start
    for cars, thread in running:
        cars.stop()
        thread.join(15)
