"""Releases: the package `make build` makes, the install script `make deploy` runs, the systemd units."""

import os
import re
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest
import requests

from carweb.config import ROOT
from carweb.devstack import free_port, stop_processes, wait_for_port
from tests.conftest import wait_until

DEPLOY = Path(ROOT) / "deploy"
UNITS = DEPLOY / "systemd"


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A release tarball made by deploy/package.sh from this checkout."""
    out = tmp_path_factory.mktemp("dist") / "carweb-test-1.tar.gz"
    subprocess.run([str(DEPLOY / "package.sh"), str(out)], cwd=ROOT, check=True, capture_output=True)
    return out


def install(release, prefix, env, name=None):
    """Run deploy/install.sh as `make deploy` does on a server, into `prefix`; the finished process."""
    if name is not None:
        renamed = release.with_name(f"{name}.tar.gz")
        shutil.copy(release, renamed)
        release = renamed
    return subprocess.run(
        ["sh", str(DEPLOY / "install.sh"), str(release), str(prefix)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_release_holds_the_tracked_files_and_the_built_browser_libraries(release):
    """Everything the server needs, and nothing of the development machine."""
    with tarfile.open(release) as tar:
        names = set(tar.getnames())
    assert {
        "wsgi.py",
        "requirements.txt",
        "deploy/install.sh",
        "static/vendor/socket.io.min.js",
        "static/vendor/uPlot.iife.min.js",
    } <= names
    assert not any(name.startswith((".venv", "var/", "node_modules", "dist/")) for name in names)


def test_the_install_script_installs_a_release_that_starts_and_answers_healthz(release, services, tmp_path):
    """Into a temporary directory: its own virtual environment, the database prepared, `current` switched."""
    prefix = tmp_path / "opt-carweb"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "PYTHON": "python3.11",
        "CARWEB_ENV_FILE": str(tmp_path / "none.env"),
        "MONGODB_URI": services.db_uri(f"release_{uuid.uuid4().hex[:8]}"),
        "SECRET_KEY": "release-test-secret",
        "CARWEB_LOG_LEVEL": "WARNING",
    }
    result = install(release, prefix, env)
    assert result.returncode == 0, result.stderr
    current = prefix / "current"
    assert os.readlink(current) == "releases/carweb-test-1"
    assert (current / ".venv" / "bin" / "gunicorn").exists()

    port = free_port()
    server_env = {**env, "CARWEB_PORT": str(port), "CARWEB_BRIDGE": "off", "CARWEB_ACCESS_LOG": "0"}
    with open(tmp_path / "installed.log", "wb") as log:
        server = subprocess.Popen(
            [str(current / ".venv/bin/gunicorn"), "-c", "deploy/gunicorn.conf.py", "wsgi:app"],
            cwd=current,
            env=server_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, server)
        health = wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5), timeout=30)
        assert health.status_code == 200 and health.json()["db"] == "ok"
    finally:
        stop_processes([server])

    again = install(release, prefix, env)
    assert again.returncode == 1 and "exists" in again.stderr  # never overwrite an installed release
    second = install(release, prefix, env, name="carweb-test-2")
    assert second.returncode == 0, second.stderr
    assert os.readlink(current) == "releases/carweb-test-2"
    assert sorted(p.name for p in (prefix / "releases").iterdir()) == ["carweb-test-1", "carweb-test-2"]


def unit_settings(path):
    """A unit file's settings as {key: [values]}."""
    settings = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.mark.parametrize("unit", ["carweb-web@.service", "carweb-bridge@.service"])
def test_systemd_units_restart_on_failure_and_are_hardened(unit):
    """Restart=on-failure, no new privileges, a read-only system; they run the release `current` points at."""
    settings = unit_settings(UNITS / unit)
    for key, value in {
        "Restart": "on-failure",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "User": "carweb",
        "WorkingDirectory": "/opt/carweb/current",
        "EnvironmentFile": "/etc/carweb/carweb.env",
    }.items():
        assert settings.get(key) == [value], (unit, key)
    assert settings["ExecStart"][0].startswith("/opt/carweb/current/.venv/bin/")


def test_the_web_unit_listens_on_its_instance_port_and_reloads_with_hup():
    """carweb-web@8001 is gunicorn on 127.0.0.1:8001; reload is gunicorn's HUP."""
    settings = unit_settings(UNITS / "carweb-web@.service")
    assert "CARWEB_PORT=%i" in settings["Environment"][0]
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert "carweb-bridge-%i" in unit_settings(UNITS / "carweb-bridge@.service")["Environment"][0]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_accepts_the_units(tmp_path):
    """`systemd-analyze verify` on both units, with the paths of an installed release made local."""
    fake = tmp_path / "opt-carweb-current"
    for tool in (".venv/bin/gunicorn", ".venv/bin/python"):
        (fake / tool).parent.mkdir(parents=True, exist_ok=True)
        (fake / tool).write_text("#!/bin/sh\n")
        (fake / tool).chmod(0o755)
    (tmp_path / "carweb.env").write_text("SECRET_KEY=x\n")
    for template, instance in (
        ("carweb-web@.service", "carweb-web@8001.service"),
        ("carweb-bridge@.service", "carweb-bridge@1.service"),
    ):
        text = (UNITS / template).read_text().replace("/opt/carweb/current", str(fake))
        text = text.replace("/etc/carweb/carweb.env", str(tmp_path / "carweb.env"))
        text = re.sub(r"^User=.*\n|^Group=.*\n", "", text, flags=re.M)  # no carweb user on this machine
        (tmp_path / instance).write_text(text)
        result = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(tmp_path / instance)],
            capture_output=True,
            text=True,
        )
        # verify exits 0 on settings it ignores, naming the file and line: any such line is a problem.
        problems = [line for line in result.stderr.splitlines() if instance in line]
        assert result.returncode == 0 and not problems, result.stderr
