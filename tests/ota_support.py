"""Helpers of the firmware update tests: the real `flask firmware` CLI and reads of a server's database."""

import os
import subprocess
import sys
import uuid

from bson import ObjectId

from carweb.config import ROOT
from tests.conftest import wait_until


def run_cli(server, *args):
    """Run `flask --app carweb firmware ARGS` with the server's environment; the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "carweb", "firmware", *args],
        env=server.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def firmware_cli(server, *args):
    """Run a firmware command that must succeed; its standard output, stripped."""
    result = run_cli(server, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def upload_image(server, tmp_path, size=200_000):
    """Upload `size` random bytes with the CLI; return (title, version, bytes, firmware id, sha256)."""
    data = os.urandom(size)
    path = tmp_path / f"image-{uuid.uuid4().hex[:6]}.bin"
    path.write_bytes(data)
    title, version = f"ecu-{uuid.uuid4().hex[:8]}", "2.1.0"
    firmware_id, sha256 = firmware_cli(
        server, "upload", str(path), "--title", title, "--version", version
    ).split()
    return title, version, data, firmware_id, sha256


def start_rollout(server, title, version, device_ids, *options):
    """Start a rollout of the image to these devices with the CLI; its id."""
    return firmware_cli(server, "rollout", title, version, "--devices", ",".join(device_ids), *options)


def wait_for_devices(server, device_ids, timeout=20):
    """Wait until the server has stored a message of every device (so they exist)."""
    devices = server.db().devices
    wait_until(
        lambda: devices.count_documents({"device_id": {"$in": device_ids}}) == len(device_ids), timeout
    )


def wait_for_rollout(server, rollout_id, state, timeout=60, **fields):
    """Wait until the rollout is in `state` (and has `fields`); return its document."""
    rollouts = server.db().rollouts

    def reached():
        """The rollout's document once it is as wanted, else None."""
        doc = rollouts.find_one({"_id": ObjectId(rollout_id)})
        return doc if doc and doc["state"] == state and all(doc[k] == v for k, v in fields.items()) else None

    try:
        return wait_until(reached, timeout, interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {describe_rollout(server, rollout_id)}") from None


def describe_rollout(server, rollout_id):
    """The rollout's state and each job's states and messages, for a failure's explanation."""
    doc = server.db().rollouts.find_one({"_id": ObjectId(rollout_id)}, {"targets": 0}) or {}
    lines = [f"rollout {doc.get('state')} wave {doc.get('current_wave')}"]
    for job in jobs_of(server, rollout_id):
        if job["state"] == "QUEUED":
            continue
        messages = server.db().messages.find({"device_id": job["device_id"]}).sort("_id", 1)
        lines.append(
            f"job {job['_id']} {job['device_id']} wave {job['wave']} {job['state']} x{job['attempts']}: "
            f"{[h['state'] for h in job['history']]}; messages: "
            f"{[(m['direction'], m['topic'].split('/', 1)[1], m.get('text', '')[:60]) for m in messages]}"
        )
    return "\n".join(lines)


def jobs_of(server, rollout_id):
    """The rollout's jobs, by wave and device."""
    return list(
        server.db().update_jobs.find({"rollout": ObjectId(rollout_id)}).sort([("wave", 1), ("device_id", 1)])
    )


def job_of(server, device_id):
    """The latest job of one device."""
    return server.db().update_jobs.find_one({"device_id": device_id}, sort=[("updated_at", -1)])


def outbound(server, device_id, subtopic):
    """Messages carweb published to `<device_id>/<subtopic>`, as the bridge stored them."""
    docs = server.db().messages.find({"device_id": device_id, "direction": "out"})
    return [doc for doc in docs if doc["topic"] == f"{device_id}/{subtopic}"]
