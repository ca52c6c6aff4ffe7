"""After `make run`, every command the README lists works in a second shell with no exports."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import requests

from carweb.config import ROOT
from carweb.simulator import simulated_device_id
from tests.conftest import wait_until
from tests.test_devstack import Stack, log_in

PASSWORD = "second shell password"
# Commands of the README the test does not run, and why.
NOT_RUN = {
    "bridge run": "runs until stopped, for CARWEB_BRIDGE=external; beside make run's bridge it would take its session"
}


def readme_commands():
    """The `flask --app carweb` commands the README shows: their command and subcommand names."""
    text = (Path(ROOT) / "README.md").read_text()
    found = set()
    for match in re.finditer(r"flask --app carweb ([a-z-]+)(?: ([a-z-]+))?", text):
        group, sub = match.groups()
        found.add(f"{group} {sub}" if group in ("firmware", "bridge", "device") and sub else group)
    return found


def checkout_copy(tmp_path):
    """The tracked files of this checkout in a new directory, with its virtual environment and browser files."""
    copy = tmp_path / "carweb"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(ROOT) / name, target)
    os.symlink(Path(ROOT) / ".venv", copy / ".venv")
    shutil.copytree(Path(ROOT) / "static" / "vendor", copy / "static" / "vendor")
    return copy


class SecondShell:
    """A new terminal in the checkout with the virtual environment activated and nothing exported."""

    def __init__(self, checkout):
        self.checkout = checkout
        venv = checkout / ".venv"
        self.env = {
            "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "VIRTUAL_ENV": str(venv),
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
        }

    def run(self, command, stdin=None):
        """Run a shell command line; its finished process (text)."""
        return subprocess.run(
            ["bash", "-c", command],
            cwd=self.checkout,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            start_new_session=True,  # no terminal: hidden prompts read standard input
        )

    def ok(self, command, stdin=None):
        """Run a command that must succeed; its standard output, stripped."""
        result = self.run(command, stdin)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        return result.stdout.strip()


def test_every_readme_command_works_in_a_second_shell_while_make_run_runs(tmp_path):
    """The stack records its settings; users, tokens, the simulator and every firmware command reach it."""
    checkout = checkout_copy(tmp_path)
    stack = Stack(checkout / "var", tmp_path / "devstack.log", root=checkout, CARWEB_SIMULATE="0")
    ran = set()
    try:
        stack.wait_started()
        assert (checkout / "var" / "run.env").exists()
        shell = SecondShell(checkout)
        shell.ok(
            "flask --app carweb create-user ops@example.com --role admin", stdin=f"{PASSWORD}\n{PASSWORD}\n"
        )
        shell.ok(
            f'echo "{PASSWORD}" | flask --app carweb create-user ci@example.com --role operator --password-stdin'
        )
        ran.add("create-user")
        token = shell.ok("flask --app carweb create-token ci@example.com --name pipeline --expires-days 90")
        ran.add("create-token")
        shell.ok("flask --app carweb init-db")
        ran.add("init-db")
        assert "shell-gateway" in shell.ok("flask --app carweb device add shell-gateway")
        assert shell.ok("flask --app carweb device token shell-gateway --name kiosk").startswith("cwd_")
        ran |= {"device add", "device token"}
        shell.ok("flask --app carweb simulate --devices 2 --rate 5 --duration 3 --prefix shell")
        shell.ok(
            "flask --app carweb simulate --devices 1 --fail-rate 0.1 --step-delay 2 --duration 1 --prefix shell"
        )
        shell.ok(
            "flask --app carweb simulate --devices 1 --rate 5 --duration 3 --transport ws --prefix shellws"
        )
        ran.add("simulate")

        session = log_in(stack.url, "ops@example.com", PASSWORD)  # the users are in make run's database
        headers = {"Authorization": f"Bearer {token}"}  # a script's token made in the second shell
        cars = [simulated_device_id("shell", n) for n in range(2)] + [simulated_device_id("shellws", 0)]
        for car in cars:  # the simulator published to make run's broker
            url = f"{stack.url}/api/v1/devices/{car}"
            wait_until(lambda url=url: requests.get(url, headers=headers, timeout=10).status_code == 200)
        socket_car = f"{stack.url}/api/v1/devices/{cars[-1]}"  # its telemetry came over the WebSocket
        wait_until(lambda: requests.get(socket_car, headers=headers, timeout=10).json()["message_count"] > 3)
        assert cars[0] in session.get(f"{stack.url}/devices?q={cars[0]}", timeout=10).text

        (checkout / "image.bin").write_bytes(os.urandom(4096))
        assert shell.ok("flask --app carweb firmware keygen --out build.pem").split()[0]
        signature = shell.ok(
            "flask --app carweb firmware sign image.bin --key build.pem --title ecu --version 2.0"
        )
        _, sha256 = shell.ok(
            f"flask --app carweb firmware upload image.bin --title ecu --version 2.0 --signature {signature}"
        ).split()
        assert len(sha256) == 64
        rollout = shell.ok(
            f"flask --app carweb firmware rollout ecu 2.0 --devices {cars[0]},{cars[1]} --waves 50,100"
        )
        status = shell.ok(f"flask --app carweb firmware status {rollout} --json")
        assert rollout in status and cars[0] in status
        resume = shell.run(f"flask --app carweb firmware resume {rollout}")
        assert resume.returncode == 1 and "halted" in resume.stderr  # it runs: only a halted one resumes
        assert shell.ok(f"flask --app carweb firmware cancel {rollout}")
        assert "CANCELED" in shell.ok(f"flask --app carweb firmware status {rollout} --json")
        ran |= {
            "firmware keygen",
            "firmware sign",
            "firmware upload",
            "firmware rollout",
            "firmware status",
            "firmware resume",
            "firmware cancel",
        }
    finally:
        stack.cleanup()
    assert readme_commands() - ran == set(NOT_RUN), readme_commands() - ran
    assert not (checkout / "var" / "run.env").exists()  # removed when make run stopped
