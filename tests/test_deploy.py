"""Deployment files: Dockerfile, entrypoint, compose, nginx, and the Mosquitto ACL on a real broker."""

import json
import os
import queue
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from carweb.bridge.mqtt import parse_mqtt_url
from carweb.config import ROOT
from carweb.devstack import free_port, mosquitto_binary, stop_processes, wait_for_port
from tests.conftest import server_env, wait_until
from tests.nginx_support import main_config, make_certificate, site_config
from tests.tls_support import issue, make_ca, outside_address

REPO = Path(ROOT)
ENTRYPOINT = REPO / "deploy" / "docker-entrypoint.sh"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
PASSWORD = "deploy-test-password"
NOT_AUTHORIZED = 135
OUTSIDE = outside_address()  # this machine's address on a network, not loopback
ENV_READ = re.compile(
    r"""(?:environ\.get\(|environ\[|getenv\(|\benv_\w+\(|\benv\.get\(|\benv\[)\s*["']([A-Z][A-Z0-9_]*)["']"""
)


def dockerfile():
    """The Dockerfile's instructions as (KEYWORD, arguments), comments dropped, continuations joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def compose():
    """docker-compose.yml, parsed."""
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_dockerfile_copies_only_files_that_are_in_the_build_context():
    """COPY sources exist and .dockerignore does not hide them; the app's files all go in."""
    ignored = {line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()}
    copied = set()
    for keyword, args in dockerfile():
        if keyword == "COPY" and "--from=" not in args:
            sources = [word for word in args.split() if not word.startswith("--")][:-1]
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: not in the repo"
                assert source.rstrip("/") not in ignored, f"COPY {source}: excluded by .dockerignore"
            copied.update(source.rstrip("/") for source in sources)
    assert {"carweb", "templates", "static", "wsgi.py", "deploy", "requirements.txt"} <= copied


def test_image_installs_production_requirements_only():
    """pip installs requirements.txt; nothing pulls the dev-only, GPL SecantusDB into the image."""
    runs = " ".join(args for keyword, args in dockerfile() if keyword == "RUN").lower()
    assert "pip install -r requirements.txt" in runs and "requirements-dev" not in runs
    assert "secantus" not in runs and "secantus" not in (REPO / "requirements.txt").read_text().lower()


def test_image_runs_entrypoint_as_non_root_with_healthcheck():
    """USER is not root, ENTRYPOINT is the repo's script, HEALTHCHECK asks /healthz on port 8000."""
    instructions = dockerfile()
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    workdir = [args for keyword, args in instructions if keyword == "WORKDIR"][-1]
    entrypoint = json.loads(next(args for keyword, args in instructions if keyword == "ENTRYPOINT"))
    assert REPO / Path(entrypoint[0]).relative_to(workdir) == ENTRYPOINT
    healthcheck = next(args for keyword, args in instructions if keyword == "HEALTHCHECK")
    assert "urllib" in healthcheck and "/healthz" in healthcheck and "8000" in healthcheck
    assert ("EXPOSE", "8000") in instructions


def test_entrypoint_is_executable_posix_sh():
    """The script is executable (git keeps the mode), strict, and `sh -n` accepts it."""
    assert os.access(ENTRYPOINT, os.X_OK)
    text = ENTRYPOINT.read_text()
    assert text.startswith("#!/bin/sh\n") and "set -eu" in text
    subprocess.run(["sh", "-n", str(ENTRYPOINT)], check=True)


def run_entrypoint(tmp_path, *args, failing=()):
    """Run the entrypoint from elsewhere with flask/gunicorn/python stubs; returns (result, calls)."""
    log = tmp_path / "calls.log"
    for name in ("flask", "gunicorn", "python"):
        stub = tmp_path / name
        record = f'echo "{name} $* | $CARWEB_HOST:$CARWEB_PORT | $(pwd)" >> {log}'
        stub.write_text(f"#!/bin/sh\n{record}\nexit {int(name in failing)}\n")
        stub.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    result = subprocess.run([ENTRYPOINT, *args], env=env, cwd=tmp_path, capture_output=True, text=True)
    return result, log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize(
    ("args", "passed_on"),
    [([], ""), (["web"], ""), (["--reload"], " --reload"), (["web", "-w", "1"], " -w 1")],
)
def test_entrypoint_prepares_database_then_execs_gunicorn_on_all_interfaces(tmp_path, args, passed_on):
    """Indexes, then the admin, then gunicorn with extra flags passed on, from the app directory."""
    result, calls = run_entrypoint(tmp_path, *args)
    assert result.returncode == 0, result.stderr
    where = f"| 0.0.0.0:8000 | {REPO}"
    assert calls == [
        f"flask --app carweb init-db {where}",
        f"flask --app carweb ensure-admin {where}",
        f"gunicorn -c deploy/gunicorn.conf.py wsgi:app{passed_on} {where}",
    ]


def test_entrypoint_does_not_start_gunicorn_when_database_setup_fails(tmp_path):
    """set -e: a failing `flask init-db` ends the container instead of serving without indexes."""
    result, calls = run_entrypoint(tmp_path, failing=("flask",))
    assert result.returncode != 0
    assert [call.split()[0] for call in calls] == ["flask"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [(["bridge"], "python -m carweb.bridge"), (["python", "-V"], "python -V")],
)
def test_entrypoint_runs_bridge_or_any_other_command(tmp_path, args, expected):
    """`bridge` runs the external bridge; any other command runs as is, without the web set-up."""
    result, calls = run_entrypoint(tmp_path, *args)
    assert result.returncode == 0, result.stderr
    assert [call.split(" | ")[0] for call in calls] == [expected]


def settings_read():
    """Every environment variable carweb or its gunicorn config reads."""
    files = [*(REPO / "carweb").rglob("*.py"), REPO / "deploy" / "gunicorn.conf.py", REPO / "wsgi.py"]
    shell = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", ENTRYPOINT.read_text()))
    return shell | {name for path in files for name in ENV_READ.findall(path.read_text())}


def test_every_setting_carweb_reads_is_in_env_example_and_the_readme():
    """An operator finds each variable in .env.example (with its default) and in the README's table."""
    example = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (REPO / ".env.example").read_text(), re.M))
    readme = set(re.findall(r"`([A-Z][A-Z0-9_]*)`", (REPO / "README.md").read_text()))
    read = settings_read()
    assert "MONGODB_URI" in read and "CARWEB_SECRET_KEY_FILE" in read
    assert read - example == set(), "not in .env.example"
    assert read - readme == set(), "not in the README"


def test_web_and_bridge_environment_names_are_all_read_by_carweb():
    """A misspelt name in compose would be silently ignored: each must be read by carweb or gunicorn."""
    known = settings_read()
    for name in ("web", "bridge"):
        unknown = set(compose()["services"][name]["environment"]) - known
        assert not unknown, f"{name}: carweb reads no {sorted(unknown)}"


def test_compose_mounts_files_that_are_in_the_repo():
    """Bind mounts exist (operator-made secrets are documented instead); named volumes are declared."""
    spec = compose()
    readme = (REPO / "deploy" / "mosquitto" / "README.md").read_text() + (
        REPO / "docs" / "deploy.md"
    ).read_text()
    for name, service in spec["services"].items():
        for volume in service.get("volumes", []):
            if isinstance(volume, str):
                kind = "bind" if volume.startswith((".", "/")) else "volume"
                volume = {"type": kind, "source": volume.split(":")[0]}
            if volume["type"] == "volume":
                assert volume["source"] in spec["volumes"], f"{name}: undeclared volume {volume['source']}"
            elif volume.get("bind", {}).get("create_host_path", True):
                assert (REPO / volume["source"]).exists(), f"{name} mounts missing {volume['source']}"
            else:
                assert os.path.normpath(volume["source"]) in readme, f"{volume['source']} is undocumented"
        if "build" in service:
            assert (REPO / service["build"] / "Dockerfile").exists()


def test_mosquitto_service_mounts_the_files_its_config_names():
    """password_file and acl_file in mosquitto.conf are where compose mounts them."""
    volumes = compose()["services"]["mosquitto"]["volumes"]
    targets = {v["target"] if isinstance(v, dict) else v.split(":")[1] for v in volumes}
    conf = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    assert {re.search(rf"^{key} (\S+)$", conf, re.M)[1] for key in ("password_file", "acl_file")} <= targets


def test_web_reaches_services_by_their_compose_names():
    """MongoDB, the broker and Redis are compose services; the bridge logs in on carweb's own listener."""
    services = compose()["services"]
    env = {key: re.sub(r"\$\{[^}]*\}", "x", value) for key, value in services["web"]["environment"].items()}
    assert urlsplit(env["MONGODB_URI"]).hostname in services
    assert urlsplit(env["SOCKETIO_MESSAGE_QUEUE"]).hostname in services
    address = parse_mqtt_url(env["MQTT_URL"])
    assert (address.host, address.port, address.username) == ("mosquitto", 1884, "carweb")
    conf = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    assert re.search(r"^listener 1884$", conf, re.M) and re.search(r"^listener 1883 127.0.0.1$", conf, re.M)
    assert services["mosquitto"]["ports"] == ["8883:8883", "8884:8884"]  # TLS only from outside
    assert "user carweb" in (REPO / "deploy" / "mosquitto" / "acl").read_text().splitlines()


def test_only_nginx_and_the_broker_publish_ports():
    """web trusts any X-Forwarded-* (FORWARDED_ALLOW_IPS=*), so only nginx may reach it; no database leaks."""
    services = compose()["services"]
    assert {name for name, service in services.items() if service.get("ports")} == {"nginx", "mosquitto"}
    assert services["nginx"]["ports"] == ["80:80", "443:443"]


def test_services_wait_for_healthy_dependencies():
    """web waits for healthy MongoDB, broker and Redis (each has a healthcheck), nginx for healthy web."""
    services = compose()["services"]
    for name, dependencies in (("web", {"mongo", "mosquitto", "redis"}), ("nginx", {"web"})):
        assert {dep: {"condition": "service_healthy"} for dep in dependencies} == services[name]["depends_on"]
        assert all("test" in services[dep].get("healthcheck", {}) for dep in dependencies - {"web"})


def test_nginx_keeps_sockets_sticky_upgrades_websockets_and_takes_firmware():
    """ip_hash upstream; HTTPS; every proxied location forwards client headers; /socket.io/ and /devices/ws upgrade; uploads follow carweb's limit."""
    text = re.sub(r"#.*", "", (REPO / "nginx" / "carweb.conf").read_text())
    upstream = re.search(r"upstream carweb\s*\{([^}]*)\}", text)[1]
    assert re.search(r"^\s*ip_hash;", upstream, re.M) and re.search(
        r"^\s*server web:8000 max_fails=0;", upstream, re.M
    )
    assert re.search(r"listen 443 ssl;", text) and re.search(r"return 301 https://\$host\$request_uri;", text)
    locations = dict(re.findall(r"location\s+(?:[=~]\s*)?(\S+)\s*\{((?:[^{}]|\$\{\w+\})*)\}", text))
    proxied = {path: body for path, body in locations.items() if "proxy_pass" in body}
    websockets = next(path for path in proxied if path.startswith("^"))
    assert all(re.match(websockets, path) for path in ("/socket.io/?EIO=4", "/devices/ws"))
    assert not re.match(websockets, "/devices/ws-not")
    assert {"/", websockets, "/firmware/upload", "/firmware/download/"} <= set(proxied)
    for path, body in proxied.items():  # a location with any proxy_set_header inherits none
        assert "proxy_pass http://carweb;" in body
        for header in ("Host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"):
            assert re.search(rf"proxy_set_header\s+{header}\s", body), f"{path} drops {header}"
    socketio = locations[websockets]
    assert re.search(r"proxy_http_version\s+1\.1;", socketio) and "proxy_buffering off;" in socketio
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade;", socketio)
    assert re.search(r"proxy_set_header\s+Connection\s+\S+;", socketio)
    timeout = re.search(r"proxy_read_timeout\s+(\d+)([smh]?);", socketio)
    assert timeout and int(timeout[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[timeout[2]] > 60
    assert "client_max_body_size ${CARWEB_MAX_FIRMWARE_MB}m;" in locations["/firmware/upload"]
    assert "alias /srv/carweb/static/;" in locations["/static/"]


def test_compose_renders_the_nginx_template_with_carwebs_firmware_limit():
    """The nginx image fills in the template from its environment: the same limit web is given."""
    services = compose()["services"]
    mounts = [v for v in services["nginx"]["volumes"] if isinstance(v, str)]
    assert "./nginx/carweb.conf:/etc/nginx/templates/default.conf.template:ro" in mounts
    limit = services["nginx"]["environment"]["CARWEB_MAX_FIRMWARE_MB"]
    assert (
        limit == services["web"]["environment"]["CARWEB_MAX_FIRMWARE_MB"] == "${CARWEB_MAX_FIRMWARE_MB:-64}"
    )


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx not installed; the structural test runs")
def test_nginx_accepts_the_config(tmp_path):
    """`nginx -t` on the rendered template with local upstream, ports and a certificate."""
    cert, key = make_certificate(tmp_path)
    site, main = tmp_path / "carweb.conf", tmp_path / "nginx.conf"
    site.write_text(site_config(["127.0.0.1:8000"], free_port(), free_port(), cert, key))
    main.write_text(main_config(tmp_path, site))
    result = subprocess.run(["nginx", "-t", "-p", f"{tmp_path}/", "-c", main], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def broker_config(ports, workdir):
    """deploy/mosquitto/mosquitto.conf with its ports, certificates, data and password file moved into `workdir`."""
    replacements = {
        "listener 1883 127.0.0.1": f"listener {ports.devices} 127.0.0.1",
        "listener 1884": f"listener {ports.carweb} 127.0.0.1",
        "listener 8883": f"listener {ports.tls}",  # every interface, as published
        "listener 8884": f"listener {ports.certs}",
        "cafile": f"cafile {ports.ca.cert}",
        "certfile": f"certfile {ports.broker_cert[0]}",
        "keyfile": f"keyfile {ports.broker_cert[1]}",
        "persistence_location": f"persistence_location {workdir}/",
        "password_file": f"password_file {workdir / 'passwd'}",
        "acl_file": f"acl_file {REPO / 'deploy' / 'mosquitto' / 'acl'}",
    }
    lines = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    keys = [
        line.strip() if line.startswith("listener ") else line.split()[0] if line.strip() else ""
        for line in lines
    ]
    assert set(replacements) <= set(keys), "mosquitto.conf lost a directive the test replaces"
    lines = [replacements.get(key, line) for key, line in zip(keys, lines, strict=True)]
    if os.geteuid() == 0:
        lines.append("user root")  # as root, Mosquitto drops to user mosquitto, which cannot write here
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """The production config and ACL on a real Mosquitto, with users carweb, carweb-ws, deviceA and deviceB."""
    if mosquitto_binary() is None or not os.path.exists(MOSQUITTO_PASSWD):
        pytest.skip("needs mosquitto and /usr/bin/mosquitto_passwd (Debian package mosquitto)")
    workdir = tmp_path_factory.mktemp("mosquitto")
    for index, user in enumerate(("carweb", "carweb-ws", "deviceA", "deviceB")):
        create = ["-c"] if index == 0 else []
        subprocess.run([MOSQUITTO_PASSWD, *create, "-b", str(workdir / "passwd"), user, PASSWORD], check=True)
    ca = make_ca(workdir / "ca")
    ports = SimpleNamespace(
        devices=free_port(), carweb=free_port(), tls=free_port(), certs=free_port(), ca=ca
    )
    ports.broker_cert = issue(ca, "broker", server=True, addresses=("127.0.0.1", OUTSIDE))
    (workdir / "mosquitto.conf").write_text(broker_config(ports, workdir))
    with open(workdir / "mosquitto.log", "wb") as log:
        process = subprocess.Popen([mosquitto_binary(), "-c", str(workdir / "mosquitto.conf")], stdout=log)
        try:
            for port in (ports.devices, ports.carweb, ports.tls, ports.certs):
                wait_for_port(port, process)
            yield ports
        finally:
            stop_processes([process])


class Peer:
    """An MQTT 5 client that records what it receives, the reason codes of its PUBACKs, its disconnects."""

    def __init__(self, port, username=None, password=PASSWORD, client_id="", host="127.0.0.1", tls=None):
        self.port, self.host, self.received, self.pubacks = port, host, queue.Queue(), {}
        self.connack, self.answered, self.subscribed = None, threading.Event(), threading.Event()
        self.disconnected = threading.Event()
        self.client = client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        client.on_connect = self.on_connect
        client.on_disconnect = lambda *_: self.disconnected.set()
        client.on_subscribe = lambda *_: self.subscribed.set()
        client.on_message = lambda _c, _u, message: self.received.put(message.topic)
        client.on_publish = lambda _c, _u, mid, code, _p: self.pubacks.__setitem__(mid, code.value)
        if username:
            client.username_pw_set(username, password)
        if tls is not None:  # (CA, client certificate or None, its key or None)
            client.tls_set(
                ca_certs=str(tls[0]), certfile=tls[1] and str(tls[1]), keyfile=tls[2] and str(tls[2])
            )

    def on_connect(self, client, _userdata, _flags, reason_code, _properties):
        """Keep the CONNACK's reason code; after a refusal, stop instead of retrying."""
        self.connack = reason_code
        if reason_code.is_failure:
            client.disconnect()
        self.answered.set()

    def start(self, *topics, clean_start=True, properties=None):
        """Connect, and subscribe to `topics` when the broker let us in; returns the CONNACK reason code."""
        self.client.connect(self.host, self.port, clean_start=clean_start, properties=properties)
        self.client.loop_start()
        assert self.answered.wait(5), "no CONNACK"
        if topics and not self.connack.is_failure:
            self.client.subscribe([(topic, 1) for topic in topics])
            assert self.subscribed.wait(5), "no SUBACK"
        return self.connack

    def publish(self, topic):
        """Publish at QoS 1 and return the PUBACK's reason code (0 success, 135 not authorized)."""
        return self.publish_payload(topic, b"x")

    def publish_payload(self, topic, payload):
        """Publish `payload` at QoS 1 and return the PUBACK's reason code."""
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(5)
        return self.pubacks[info.mid]

    def receive_until(self, topic):
        """Every topic received up to and including `topic`, which must come within 5 s."""
        seen = []
        while topic not in seen:
            seen.append(self.received.get(timeout=5))
        return seen


@pytest.fixture
def peers(broker):
    """Make started MQTT clients on the broker as `peers(username, *topics)`; all stopped afterwards.

    `carweb` and `carweb-ws` connect to carweb's listener, everybody else to the devices' one, as deployed.
    """
    started = []

    def start(
        username, *topics, password=PASSWORD, client_id="", port=None, host="127.0.0.1", tls=None, **connect
    ):
        """A client of `username` that tried to connect and subscribe to `topics`."""
        port = port or (broker.carweb if username in ("carweb", "carweb-ws") else broker.devices)
        started.append(Peer(port, username, password, client_id, host=host, tls=tls))
        started[-1].start(*topics, **connect)
        return started[-1]

    yield start
    for peer in started:
        peer.client.disconnect()
        peer.client.loop_stop()
        # paho keeps a socket pair for waking its loop and closes it only when the client is
        # collected; collected in a cycle, the sockets go first and warn as unclosed.
        peer.client._reset_sockets()


@pytest.mark.parametrize(("username", "password"), [(None, None), ("deviceA", "wrong password")])
def test_broker_refuses_anonymous_and_wrong_password(peers, username, password):
    """allow_anonymous false and the password file hold; the right password gets in."""
    assert peers(username, password=password).connack.is_failure
    assert not peers("deviceA").connack.is_failure


def test_device_publishes_under_its_own_id_to_the_bridge(peers):
    """deviceA/telemetry reaches carweb's `+/#` and the bridges' shared subscription."""
    bridge, shared = peers("carweb", "+/#"), peers("carweb", "$share/carweb/+/#")
    assert peers("deviceA").publish("deviceA/telemetry") == 0
    assert bridge.receive_until("deviceA/telemetry") == ["deviceA/telemetry"]
    assert shared.receive_until("deviceA/telemetry") == ["deviceA/telemetry"]


def test_device_cannot_publish_under_another_id(peers):
    """deviceA's publish to deviceB/telemetry is refused and reaches neither carweb nor deviceB."""
    bridge, device_a, device_b = peers("carweb", "+/#"), peers("deviceA"), peers("deviceB", "deviceB/#")
    assert device_a.publish("deviceB/telemetry") == NOT_AUTHORIZED
    assert device_a.publish("deviceA/marker") == 0  # after the refused one, so it would come first
    assert "deviceB/telemetry" not in bridge.receive_until("deviceA/marker")
    assert bridge.publish("deviceB/firmware/marker") == 0
    assert "deviceB/telemetry" not in device_b.receive_until("deviceB/firmware/marker")


def test_device_cannot_receive_another_devices_messages(peers):
    """deviceA may subscribe to deviceB/#, but nothing of deviceB's is delivered to it."""
    bridge, device_a = peers("carweb", "+/#"), peers("deviceA", "deviceB/#", "deviceA/#")
    assert peers("deviceB").publish("deviceB/x") == 0
    bridge.receive_until("deviceB/x")
    assert bridge.publish("deviceA/firmware/marker") == 0
    assert "deviceB/x" not in device_a.receive_until("deviceA/firmware/marker")


def test_bridge_writes_firmware_topics_only(peers):
    """carweb's publish to deviceA/firmware/update is delivered; to deviceA/other it is refused."""
    bridge, device_a = peers("carweb"), peers("deviceA", "deviceA/#")
    assert bridge.publish("deviceA/other") == NOT_AUTHORIZED
    assert bridge.publish("deviceA/firmware/update") == 0
    assert "deviceA/other" not in device_a.receive_until("deviceA/firmware/update")


def test_device_sockets_sessions_publish_under_any_device_and_keep_their_own_client_ids(peers):
    """carweb-ws publishes deviceB/telemetry and takes deviceA's commands; two sockets' sessions coexist."""
    bridge = peers("carweb", "+/#")
    socket_a = peers("carweb-ws", "deviceA/firmware/update", client_id="carweb-ws-deviceA")
    socket_b = peers("carweb-ws", client_id="carweb-ws-deviceB")
    assert socket_b.publish("deviceB/telemetry") == 0
    assert bridge.receive_until("deviceB/telemetry") == ["deviceB/telemetry"]
    assert bridge.publish("deviceA/firmware/update") == 0
    assert socket_a.receive_until("deviceA/firmware/update") == ["deviceA/firmware/update"]
    assert not socket_a.disconnected.is_set() and not socket_b.disconnected.is_set()


def test_compose_broker_healthcheck_needs_the_bridge_password(broker):
    """The mosquitto service's healthcheck passes with carweb's password and fails without it."""
    command = compose()["services"]["mosquitto"]["healthcheck"]["test"][1].replace("$$", "$")
    for password, healthy in ((PASSWORD, True), ("wrong", False)):
        env = {"PATH": os.environ["PATH"], "CARWEB_MQTT_PASSWORD": password}
        args = ["sh", "-c", command.replace("-p 1884", f"-p {broker.carweb}")]
        assert (subprocess.run(args, env=env, capture_output=True, timeout=10).returncode == 0) is healthy


def persistent_session():
    """CONNECT properties of a session the broker keeps for an hour (as the bridge's)."""
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    return properties


def test_a_device_cannot_take_over_the_bridges_client_id_or_session(peers):
    """deviceA connecting as `carweb-web` with a clean start leaves the bridge connected and its session whole."""
    bridge = peers(
        "carweb", "+/#", client_id="carweb-web", clean_start=False, properties=persistent_session()
    )
    intruder = peers("deviceA", client_id="carweb-web", clean_start=True)
    assert not intruder.connack.is_failure  # let in, but as client `deviceA`
    assert not bridge.disconnected.wait(2)
    assert peers("deviceB").publish("deviceB/after-takeover") == 0
    assert bridge.receive_until("deviceB/after-takeover")[-1] == "deviceB/after-takeover"


def test_a_device_cannot_take_over_another_devices_client_id(peers):
    """deviceA asking for client id `deviceB` does not disconnect deviceB."""
    device_b = peers("deviceB", "deviceB/#", client_id="deviceB")
    peers("deviceA", client_id="deviceB")
    assert not device_b.disconnected.wait(2)
    assert peers("carweb").publish("deviceB/firmware/marker") == 0
    assert device_b.receive_until("deviceB/firmware/marker")[-1] == "deviceB/firmware/marker"


def test_broker_refuses_packets_over_the_limit_carweb_is_configured_for(peers):
    """A device's 1.5 MiB publish gets it disconnected and reaches nobody; 900 KiB passes."""
    bridge, device_a = peers("carweb", "+/#"), peers("deviceA")
    device_a.client.publish("deviceA/huge", bytes(1536 * 1024), qos=1)
    assert device_a.disconnected.wait(5)
    device_b = peers("deviceB")
    assert device_b.publish_payload("deviceB/large", bytes(900 * 1024)) == 0
    assert bridge.receive_until("deviceB/large") == ["deviceB/large"]


def test_a_device_reaches_the_broker_over_tls_from_the_network_and_never_in_clear_text(peers, broker):
    """8883 takes a device with its password over TLS on any interface; plain 1883 listens on 127.0.0.1 only."""
    device = peers("deviceA", "deviceA/#", host=OUTSIDE, port=broker.tls, tls=(broker.ca.cert, None, None))
    assert not device.connack.is_failure
    assert device.publish("deviceA/telemetry") == 0 and device.receive_until("deviceA/telemetry")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((OUTSIDE, broker.devices), timeout=5).close()
    stranger = peers(
        "deviceA", password="wrong password", host=OUTSIDE, port=broker.tls, tls=(broker.ca.cert, None, None)
    )
    assert stranger.connack.is_failure


def test_a_device_with_a_client_certificate_logs_in_as_its_common_name(peers, broker):
    """8884: the certificate names the device; it may use its own topics only, and no certificate gets nobody in."""
    cert, key = issue(broker.ca, "deviceB")
    device = peers(None, "deviceB/#", host=OUTSIDE, port=broker.certs, tls=(broker.ca.cert, cert, key))
    assert not device.connack.is_failure
    assert device.publish("deviceB/telemetry") == 0
    assert device.publish("deviceA/telemetry") == NOT_AUTHORIZED
    with pytest.raises((ssl.SSLError, ConnectionError, AssertionError)):
        peers(None, port=broker.certs, tls=(broker.ca.cert, None, None)).publish("x/y")


def bridge_log_after(services, broker, tmp_path, certificate, wait_for):
    """Run carweb's bridge against the certificate listener with `certificate`; its log once `wait_for` is in it."""
    env = server_env(
        services,
        f"tls_{uuid.uuid4().hex[:8]}",
        free_port(),
        MQTT_URL=f"mqtts://127.0.0.1:{broker.certs}",
        MQTT_CA_FILE=str(broker.ca.cert),
        MQTT_CERT_FILE=str(certificate[0]),
        MQTT_KEY_FILE=str(certificate[1]),
        CARWEB_LOG_LEVEL="INFO",
    )
    log_path = tmp_path / f"bridge-{uuid.uuid4().hex[:6]}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "carweb.bridge"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: wait_for in log_path.read_text(errors="replace"), timeout=30)
        time.sleep(3)  # paho retries every second or more: time for a second and third try
        return log_path.read_text(errors="replace")
    finally:
        stop_processes([process])


def test_the_bridge_connects_with_its_client_certificate(services, broker, tmp_path):
    """A certificate for `carweb` signed by the fleet's CA: connected and subscribed as user carweb."""
    text = bridge_log_after(services, broker, tmp_path, issue(broker.ca, "carweb"), "connected to the broker")
    assert "cannot connect" not in text


def test_a_bridge_with_a_wrong_certificate_is_refused_with_one_clear_log_line(services, broker, tmp_path):
    """A certificate from another CA: the broker refuses it, and the log says so once, not at every retry."""
    stranger = make_ca(tmp_path / "other-ca", "other-ca")
    text = bridge_log_after(
        services, broker, tmp_path, issue(stranger, "carweb"), "cannot connect to the broker"
    )
    lines = [line for line in text.splitlines() if "cannot connect to the broker" in line]
    assert len(lines) == 1, text
    assert "refused carweb's client certificate (MQTT_CERT_FILE, MQTT_KEY_FILE)" in lines[0]
    assert "connected to the broker (session" not in text and "Traceback" not in text
