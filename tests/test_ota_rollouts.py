"""Rollouts end to end: a real gunicorn with the bridge, the broker, the database and simulated cars."""

import json
import time
import uuid

import pytest

from carweb.devstack import free_port, stop_processes
from tests.conftest import LiveServer, server_env, start_gunicorn, wait_until
from tests.ota_support import (
    firmware_cli,
    job_of,
    jobs_of,
    outbound,
    run_cli,
    start_rollout,
    upload_image,
    wait_for_devices,
    wait_for_rollout,
)

TERMINAL = {"UPDATED", "FAILED", "REJECTED", "TIMED_OUT", "CANCELED"}


@pytest.fixture(scope="module")
def ota_server(services, tmp_path_factory):
    """A carweb of its own whose timeout sweep runs every 0.3 s (the shared one sweeps every 10 s)."""
    db_name = f"ota_{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = server_env(services, db_name, port, CARWEB_OTA_SWEEP_SECONDS="0.3")
    process = start_gunicorn(env, tmp_path_factory.mktemp("ota") / "gunicorn.log")
    server = LiveServer(f"http://127.0.0.1:{port}", services.db_uri(db_name), db_name, env)
    try:
        yield server
    finally:
        server.mongo.close()
        stop_processes([process])


def report(publisher, device_id, job_id, state, **fields):
    """Publish a status report as the device, QoS 1, and wait for the broker."""
    payload = json.dumps({"job": str(job_id), "state": state, **fields})
    publisher.publish(f"{device_id}/firmware/status", payload, qos=1).wait_for_publish(5)


def announce(publisher, device_ids):
    """Make devices known to carweb by a first message each."""
    for device_id in device_ids:
        publisher.publish(f"{device_id}/status", "online", qos=1).wait_for_publish(5)


def first_time(job, states):
    """When the job first entered one of `states`."""
    return min(h["at"] for h in job["history"] if h["state"] in states)


def test_rollout_over_twenty_devices_in_waves_completes(ota_server, fleet, tmp_path):
    """Waves 10/50/100 of 20 cars: 2, then 8, then 10 devices, each wave after the last one finished."""
    title, version, _, _, _ = upload_image(ota_server, tmp_path)
    devices = fleet(20)
    wait_for_devices(ota_server, devices)

    rollout_id = start_rollout(ota_server, title, version, devices, "--waves", "10,50,100")
    wait_for_rollout(ota_server, rollout_id, "COMPLETED", timeout=120)

    status = json.loads(firmware_cli(ota_server, "status", rollout_id, "--json"))
    assert status["id"] == rollout_id and status["state"] == "COMPLETED"
    assert sorted(j["device_id"] for j in status["jobs"]) == sorted(devices)
    assert {j["state"] for j in status["jobs"]} == {"UPDATED"}
    jobs = jobs_of(ota_server, rollout_id)
    waves = [[j for j in jobs if j["wave"] == w] for w in range(3)]
    assert [len(w) for w in waves] == [2, 8, 10]
    for earlier, later in zip(waves, waves[1:], strict=False):
        assert max(first_time(j, {"UPDATED"}) for j in earlier) <= min(first_time(j, {"SENT"}) for j in later)
    for job in jobs:
        assert [h["state"] for h in job["history"]] == [
            "SENT",
            "DOWNLOADING",
            "DOWNLOADED",
            "VERIFIED",
            "UPDATING",
            "UPDATED",
        ]
    fw = {d["fw_version"] for d in ota_server.db().devices.find({"device_id": {"$in": devices}})}
    assert fw == {version}


def test_failing_image_halts_after_the_first_wave_then_resume_and_cancel(ota_server, fleet, tmp_path):
    """Every checksum fails: wave 1 fails (with its retry) and halts; resume runs wave 2; cancel stops wave 3."""
    title, version, _, _, _ = upload_image(ota_server, tmp_path)
    devices = fleet(20, fail_rate=1.0)
    wait_for_devices(ota_server, devices)

    rollout_id = start_rollout(ota_server, title, version, devices, "--waves", "10,50,100", "--retries", "1")
    wait_for_rollout(ota_server, rollout_id, "HALTED", timeout=60, current_wave=0)
    jobs = jobs_of(ota_server, rollout_id)
    first = [j for j in jobs if j["wave"] == 0]
    assert {(j["state"], j["attempts"]) for j in first} == {("FAILED", 2)}
    assert all("sha256 mismatch" in j["error"] for j in first)
    assert {j["state"] for j in jobs if j["wave"] > 0} == {"QUEUED"}
    wait_until(lambda: all(len(outbound(ota_server, j["device_id"], "firmware/update")) == 2 for j in first))
    assert not any(outbound(ota_server, j["device_id"], "firmware/update") for j in jobs if j["wave"] > 0)

    assert firmware_cli(ota_server, "resume", rollout_id) == "RUNNING"
    wait_for_rollout(ota_server, rollout_id, "HALTED", timeout=60, current_wave=1)
    jobs = jobs_of(ota_server, rollout_id)
    assert {j["state"] for j in jobs if j["wave"] == 1} == {"FAILED"}
    assert {j["state"] for j in jobs if j["wave"] == 2} == {"QUEUED"}

    assert firmware_cli(ota_server, "cancel", rollout_id) == "CANCELED"
    status = json.loads(firmware_cli(ota_server, "status", rollout_id, "--json"))
    assert status["state"] == "CANCELED"
    assert sorted(j["state"] for j in status["jobs"]).count("CANCELED") == 10
    assert not any(outbound(ota_server, d, "firmware/cancel") for d in devices)
    assert run_cli(ota_server, "resume", rollout_id).returncode != 0


def test_cancel_tells_devices_before_updating_and_lets_updating_ones_finish(ota_server, publisher, tmp_path):
    """Cancel: DOWNLOADING and SENT jobs are canceled and told so; an UPDATING job goes on to UPDATED."""
    title, version, _, _, _ = upload_image(ota_server, tmp_path)
    downloading, updating, silent = (str(uuid.uuid4()) for _ in range(3))
    announce(publisher, [downloading, updating, silent])
    wait_for_devices(ota_server, [downloading, updating, silent])
    rollout_id = start_rollout(ota_server, title, version, [downloading, updating, silent])
    jobs = {j["device_id"]: j["_id"] for j in jobs_of(ota_server, rollout_id)}

    report(publisher, downloading, jobs[downloading], "DOWNLOADING", progress=10)
    report(publisher, updating, jobs[updating], "UPDATING")
    wait_until(lambda: job_of(ota_server, updating)["state"] == "UPDATING")
    wait_until(lambda: job_of(ota_server, downloading)["state"] == "DOWNLOADING")
    assert firmware_cli(ota_server, "cancel", rollout_id) == "CANCELED"

    assert job_of(ota_server, downloading)["state"] == job_of(ota_server, silent)["state"] == "CANCELED"
    assert job_of(ota_server, updating)["state"] == "UPDATING"
    for device_id in (downloading, silent):
        told = wait_until(lambda device_id=device_id: outbound(ota_server, device_id, "firmware/cancel"))
        assert json.loads(told[0]["payload"]) == {"job": str(jobs[device_id])}
    assert outbound(ota_server, updating, "firmware/cancel") == []

    report(publisher, updating, jobs[updating], "UPDATED", version=version)
    wait_until(lambda: job_of(ota_server, updating)["state"] == "UPDATED")
    assert ota_server.db().devices.find_one({"device_id": updating})["fw_version"] == version
    report(publisher, downloading, jobs[downloading], "UPDATED", version=version)
    assert wait_for_rollout(ota_server, rollout_id, "CANCELED")
    assert job_of(ota_server, downloading)["state"] == "CANCELED"


def test_silent_device_times_out_and_is_retried_up_to_the_limit(ota_server, publisher, tmp_path):
    """No report within the step timeout: TIMED_OUT, sent again twice, then TIMED_OUT for good."""
    title, version, _, _, _ = upload_image(ota_server, tmp_path)
    device_id = str(uuid.uuid4())
    announce(publisher, [device_id])
    wait_for_devices(ota_server, [device_id])

    rollout_id = start_rollout(ota_server, title, version, [device_id], "--timeout", "1", "--retries", "2")
    wait_for_rollout(ota_server, rollout_id, "HALTED", timeout=30)

    job = job_of(ota_server, device_id)
    assert job["state"] == "TIMED_OUT" and job["attempts"] == 3 and job["error"] == "no report for 1 s"
    assert [h["state"] for h in job["history"]] == ["SENT", "TIMED_OUT"] * 3
    commands = wait_until(
        lambda: (c := outbound(ota_server, device_id, "firmware/update")) and len(c) == 3 and c
    )
    assert len(commands) == 3 and {json.loads(c["payload"])["job"] for c in commands} == {str(job["_id"])}


def test_answering_device_does_not_time_out(ota_server, publisher, tmp_path):
    """Progress reports keep moving the deadline; the job is never TIMED_OUT while the device talks."""
    title, version, _, _, _ = upload_image(ota_server, tmp_path)
    device_id = str(uuid.uuid4())
    announce(publisher, [device_id])
    wait_for_devices(ota_server, [device_id])
    rollout_id = start_rollout(ota_server, title, version, [device_id], "--timeout", "2")
    job_id = job_of(ota_server, device_id)["_id"]
    for progress in range(10, 60, 10):
        report(publisher, device_id, job_id, "DOWNLOADING", progress=progress)
        wait_until(lambda progress=progress: job_of(ota_server, device_id).get("progress") == progress)
        time.sleep(0.6)  # five reports span more than the 2 s step timeout
    report(publisher, device_id, job_id, "UPDATED", version=version)
    wait_for_rollout(ota_server, rollout_id, "COMPLETED")
    assert "TIMED_OUT" not in {h["state"] for h in job_of(ota_server, device_id)["history"]}


@pytest.fixture(scope="module")
def cli_image(ota_server, tmp_path_factory):
    """One small image for the CLI error tests: (title, version)."""
    return upload_image(ota_server, tmp_path_factory.mktemp("cli"), size=10)[:2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rollout", "no-such-image", "1.0", "--all"], "unknown firmware"),
        (["rollout", "{title}", "{version}", "--devices", "no-such-device"], "unknown device"),
        (["rollout", "{title}", "{version}", "--all", "--waves", "50,20,100"], "must increase"),
        (["rollout", "{title}", "{version}", "--all", "--waves", "10,50"], "last wave must be 100"),
        (["rollout", "{title}", "{version}", "--all", "--devices", "x"], "exactly one of"),
        (["status", "0123456789abcdef01234567", "--json"], "unknown rollout"),
        (["cancel", "not-an-id"], "unknown rollout"),
    ],
)
def test_cli_errors_exit_non_zero_with_one_line(ota_server, cli_image, args, message):
    """Unknown firmware, devices or rollouts and bad percentages: exit status 1 and one line saying why."""
    title, version = cli_image
    result = run_cli(ota_server, *(a.format(title=title, version=version) for a in args))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_cli_upload_refuses_an_empty_image_and_a_blank_title(ota_server, tmp_path):
    """The CLI applies the store's rules: no empty image, no empty title."""
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    refused = run_cli(ota_server, "upload", str(empty), "--title", "ecu", "--version", "9.9.9")
    assert refused.returncode == 1 and "the file is empty" in refused.stderr
    image = tmp_path / "image.bin"
    image.write_bytes(b"firmware")
    blank = run_cli(ota_server, "upload", str(image), "--title", " ", "--version", "9.9.9")
    assert blank.returncode == 1 and "needs a title and a version" in blank.stderr
