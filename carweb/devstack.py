"""`make run`: start the local services carweb needs, then carweb itself under gunicorn.

Used by `make run` and by the test suite, so both start MongoDB (SecantusDB) and the
broker the same way. SecantusDB runs as its own process; carweb never imports it.
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from carweb import config
from carweb.config import ROOT

EMBEDDED_DB_OPTIONS = "retryWrites=false&journal=true"
# What `make run` records for commands run in another shell (carweb.config reads run.env).
RECORDED = (
    "MONGODB_URI",
    "MQTT_URL",
    "MQTT_PROTOCOL",
    "CARWEB_SECRET_KEY_FILE",
    "CARWEB_HOST",
    "CARWEB_PORT",
    "CARWEB_PUBLIC_URL",
)
# Children get their own session: a Ctrl-C reaches only us, and we stop them in order.
OWN_SESSION = {"start_new_session": True}


def quote(value):
    """A value for a single-quoted line of a dotenv file."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port, process=None, timeout=30.0, host="127.0.0.1"):
    """Wait until something accepts connections on `port`; fail if `process` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


def venv_tool(name):
    """The path of a console script next to this Python, else on PATH, else None."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def start_secantus(port, storage_path, log_file=None, cache_size=None):
    """Start SecantusDB on 127.0.0.1:`port`; returns the process once it accepts connections."""
    binary = venv_tool("secantusd-py")
    if binary is None:
        raise RuntimeError("secantusd-py not found: pip install -r requirements-dev.txt, or set MONGODB_URI")
    args = [binary, "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(storage_path)]
    args += ["--log-level", "WARNING"] + (["--cache-size", cache_size] if cache_size else [])
    process = subprocess.Popen(
        args, stdout=log_file, stderr=subprocess.STDOUT if log_file else None, **OWN_SESSION
    )
    wait_for_port(port, process, timeout=60)
    return process


def mongodb_uri(port, database="carweb"):
    """The URI of an embedded database, with the options it needs."""
    return f"mongodb://127.0.0.1:{port}/{database}?{EMBEDDED_DB_OPTIONS}"


def mosquitto_binary():
    """Mosquitto's path, or None when it is not installed."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None
    )


def mosquitto_config(port, data_dir, extra=""):
    """A Mosquitto configuration for a local broker on 127.0.0.1:`port`."""
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "persistence true",
        f"persistence_location {data_dir}/",
        "log_dest stdout",
        "log_type error",
        "log_type warning",
        "max_queued_messages 100000",
        "max_inflight_messages 10000",
        "set_tcp_nodelay true",
    ]
    if os.geteuid() == 0:
        # Started as root, Mosquitto drops to user `mosquitto`, which cannot write here.
        lines.append("user root")
    return "\n".join(lines) + "\n" + extra


def start_mosquitto(port, data_dir, log_file=None, extra=""):
    """Start Mosquitto with its config and persistence in `data_dir`."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = data_dir / "mosquitto.conf"
    conf.write_text(mosquitto_config(port, data_dir.resolve(), extra))
    process = subprocess.Popen(
        [mosquitto_binary(), "-c", str(conf)],
        stdout=log_file,
        stderr=subprocess.STDOUT if log_file else None,
        **OWN_SESSION,
    )
    wait_for_port(port, process)
    return process


def start_amqtt(port, data_dir, log_file=None):
    """Start the pure-Python broker amqtt (MQTT 3.1.1 only) when Mosquitto is missing."""
    binary = venv_tool("amqtt")
    if binary is None:
        raise RuntimeError("neither mosquitto nor amqtt is installed; install one or set MQTT_URL")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = data_dir / "amqtt.yaml"
    conf.write_text(
        "listeners:\n  default:\n    type: tcp\n"
        f"    bind: 127.0.0.1:{port}\n"
        "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
    )
    process = subprocess.Popen(
        [binary, "-c", str(conf)],
        stdout=log_file,
        stderr=subprocess.STDOUT if log_file else None,
        **OWN_SESSION,
    )
    wait_for_port(port, process)
    return process


def start_web(env, log_file=None, timeout=30):
    """Start carweb under gunicorn (gevent worker) and wait until /healthz answers 200."""
    args = [venv_tool("gunicorn"), "-c", os.path.join(ROOT, "deploy", "gunicorn.conf.py"), "wsgi:app"]
    process = subprocess.Popen(
        args,
        env=env,
        cwd=ROOT,
        stdout=log_file,
        stderr=subprocess.STDOUT if log_file else None,
        **OWN_SESSION,
    )
    host, port = env.get("CARWEB_HOST") or "127.0.0.1", int(env.get("CARWEB_PORT") or 8000)
    wait_for_port(port, process, timeout=timeout, host=host)
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5):
                return process
        except urllib.error.HTTPError as exc:
            last = exc.read().decode(errors="replace")
        except OSError as exc:  # the worker is still booting
            last = repr(exc)
        time.sleep(0.1)
    stop_processes([process])
    raise RuntimeError(f"carweb did not become healthy: {last}")


def run_flask(env, *args, capture=False, stdin=None):
    """Run `flask --app carweb ARGS` in `env`; stderr always reaches the terminal."""
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "carweb", *args],
        env=env,
        check=True,
        stdout=subprocess.PIPE if capture else None,
        input=stdin,
        text=True,
        cwd=ROOT,
    )


def device_client(port, name="device"):
    """A paho client connected to a local broker as a test or benchmark device, its loop running.

    Up to 1,000 QoS 1 messages may be in flight and none are held back in paho's queue.
    """
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{secrets.token_hex(4)}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def stop_processes(processes, timeout=10):
    """Stop processes we started, last started first, each before the next (SIGTERM, then SIGKILL)."""
    for process in reversed(processes):
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class LocalStack:
    """The processes `make run` starts, stopped together."""

    def __init__(self, env):
        self.env = env
        self.data_dir = config.data_dir(env)
        self.processes = []
        self.settings_file = config.run_settings_path(env)

    def say(self, text):
        """Tell the operator what happens."""
        print(f"carweb: {text}", flush=True)

    def ensure_secret_key(self):
        """Use SECRET_KEY, else one kept in the data directory so sessions survive restarts."""
        if self.env.get("SECRET_KEY") or self.env.get("CARWEB_SECRET_KEY_FILE"):
            return
        path = self.data_dir / "secret_key"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        self.env["CARWEB_SECRET_KEY_FILE"] = str(path)

    def record_settings(self):
        """Write what this run chose to run.env, where `flask --app carweb ...` in another shell reads it."""
        self.env.setdefault("CARWEB_PUBLIC_URL", config.default_public_url(self.env))
        lines = [
            "# Written by `make run` while it runs (removed when it stops); the real environment wins.",
            *(f"{key}='{quote(self.env[key])}'" for key in RECORDED if self.env.get(key)),
        ]
        self.settings_file.write_text("\n".join(lines) + "\n")
        self.settings_file.chmod(0o600)
        self.say(f"settings for other shells in {self.settings_file}")

    def ensure_database(self):
        """Start SecantusDB with its data in the data directory unless MONGODB_URI is set."""
        if self.env.get("MONGODB_URI"):
            return
        port = int(self.env.get("CARWEB_DB_PORT") or free_port())
        log = open(self.data_dir / "secantusdb.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.processes.append(start_secantus(port, self.data_dir / "db", log_file=log))
        self.env["MONGODB_URI"] = mongodb_uri(port)
        self.say(f"MongoDB (SecantusDB) at {self.env['MONGODB_URI']}, data in {self.data_dir / 'db'}")

    def ensure_broker(self):
        """Start Mosquitto (or amqtt) with its data in the data directory unless MQTT_URL is set."""
        if self.env.get("MQTT_URL"):
            return
        port = int(self.env.get("CARWEB_MQTT_PORT") or free_port())
        log = open(self.data_dir / "broker.log", "ab")  # noqa: SIM115 - lives as long as the process
        if mosquitto_binary():
            self.processes.append(start_mosquitto(port, self.data_dir / "mosquitto", log_file=log))
            name = "Mosquitto"
        else:
            self.processes.append(start_amqtt(port, self.data_dir / "amqtt", log_file=log))
            self.env["MQTT_PROTOCOL"] = "3.1.1"
            name = "amqtt"
        self.env["MQTT_URL"] = f"mqtt://127.0.0.1:{port}"
        self.say(f"MQTT broker ({name}) at {self.env['MQTT_URL']}")

    def ensure_admin(self):
        """Create the configured admin, or a first one with a password printed once."""
        result = self.flask("ensure-admin", capture=True)
        if result.stdout.strip():
            self.say(result.stdout.strip())

    def flask(self, *args, capture=False):
        """Run a `flask --app carweb` command with the stack's environment."""
        return run_flask(self.env, *args, capture=capture)

    def start_web(self):
        """carweb under gunicorn with the gevent worker."""
        self.processes.append(start_web(self.env))
        host, port = self.env.get("CARWEB_HOST") or "127.0.0.1", self.env.get("CARWEB_PORT") or "8000"
        self.say(f"open http://{host}:{port}  (Ctrl-C stops everything)")

    def start_simulator(self):
        """CARWEB_SIMULATE=N: also run N simulated cars."""
        count = int(self.env.get("CARWEB_SIMULATE") or 0)
        if count > 0:
            args = [sys.executable, "-m", "flask", "--app", "carweb", "simulate", "--devices", str(count)]
            self.processes.append(
                subprocess.Popen(
                    args + ["--mqtt-url", self.env["MQTT_URL"]], env=self.env, cwd=ROOT, **OWN_SESSION
                )
            )

    def run(self):
        """Start everything, wait until Ctrl-C or until a process dies, then stop everything."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
        try:
            self.ensure_secret_key()
            self.ensure_database()
            self.ensure_broker()
            self.record_settings()
            self.ensure_admin()
            self.start_web()
            self.start_simulator()
            while not stop and all(p.poll() is None for p in self.processes):
                time.sleep(0.5)
            dead = [p for p in self.processes if p.poll() is not None]
            return 1 if dead and not stop else 0
        except KeyboardInterrupt:
            return 0
        finally:
            self.say("stopping")
            self.settings_file.unlink(missing_ok=True)
            stop_processes(self.processes)


def main():
    """Entry point of `python -m carweb.devstack`."""
    from dotenv import dotenv_values

    env = {**dotenv_values(os.path.join(ROOT, ".env")), **os.environ}
    env = {key: value for key, value in env.items() if value is not None}
    sys.exit(LocalStack(env).run())


if __name__ == "__main__":
    main()
