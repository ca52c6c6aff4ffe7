"""Firmware pages through the Flask test client: upload, list, detail, delete, rollouts, device updates."""

import hashlib
import io
import os
import re

import pytest
from gridfs import GridFSBucket
from mongoengine.connection import get_db

from carweb.models import Device, Firmware, Rollout, UpdateJob
from carweb.ota.delivery import signed_download_url
from carweb.ota.rollouts import create_rollout
from carweb.ota.store import store_firmware
from tests.conftest import csrf_token

IMAGE = os.urandom(300_000)  # below the test client's 500 kB spooling threshold


def upload(client, auth, title="ecu", version="1.0.0", data=IMAGE, xhr=False, notes="first"):
    """Post the upload form; return the response."""
    token = auth.token("/firmware/upload")
    form = {"csrf_token": token, "title": title, "version": version, "notes": notes}
    if data is not None:
        form["file"] = (io.BytesIO(data), "image.bin")
    headers = {"X-Requested-With": "XMLHttpRequest"} if xhr else {}
    return client.post("/firmware/upload", data=form, content_type="multipart/form-data", headers=headers)


def stored_bytes(firmware):
    """The image's bytes as GridFS holds them."""
    return GridFSBucket(get_db()).open_download_stream(firmware.file_id).read()


def test_upload_streams_the_image_into_gridfs_with_its_sha256(client, auth):
    """The form stores the exact bytes, their size and SHA-256, and shows them on the detail page."""
    auth.login()
    response = upload(client, auth)
    firmware = Firmware.objects.get(title="ecu", version="1.0.0")
    assert response.status_code == 302 and response.location.endswith(f"/firmware/{firmware.pk}")
    assert firmware.size == len(IMAGE) and firmware.sha256 == hashlib.sha256(IMAGE).hexdigest()
    assert stored_bytes(firmware) == IMAGE
    assert firmware.created_by == "admin@example.com" and firmware.notes == "first"
    page = client.get(response.location).get_data(as_text=True)
    assert firmware.sha256 in page and "300,000 B" in page
    assert "ecu" in client.get("/firmware").get_data(as_text=True)


def test_upload_script_gets_json(client, auth):
    """The progress-bar script gets the new page's address, or the errors, as JSON."""
    auth.login()
    done = upload(client, auth, xhr=True)
    assert done.status_code == 200 and done.get_json()["location"].startswith("/firmware/")
    again = upload(client, auth, xhr=True)
    assert again.status_code == 400
    assert again.get_json() == {"errors": ["Version: ecu 1.0.0 already exists."]}


def test_empty_and_missing_files_are_refused(client, auth):
    """An empty file stores nothing; no file is a form error."""
    auth.login()
    empty = upload(client, auth, data=b"")
    assert empty.status_code == 400 and "the file is empty" in empty.get_data(as_text=True)
    missing = upload(client, auth, data=None)
    assert missing.status_code == 400 and "Choose the image file." in missing.get_data(as_text=True)
    assert Firmware.objects.count() == 0
    assert get_db()["fs.files"].count_documents({}) == 0


def test_title_and_version_are_unique(client, auth):
    """The same title + version again is refused; another version of the title is fine."""
    auth.login()
    upload(client, auth)
    duplicate = upload(client, auth)
    assert duplicate.status_code == 400 and "ecu 1.0.0 already exists" in duplicate.get_data(as_text=True)
    assert upload(client, auth, version="1.0.1").status_code == 302
    assert Firmware.objects.count() == 2


def test_image_over_the_limit_gets_a_clear_413(client, auth, app):
    """Over CARWEB_MAX_FIRMWARE_MB: 413 saying the limit, whether the request or the image is too large."""
    auth.login()
    app.config["CARWEB_MAX_FIRMWARE_MB"] = 0  # the image alone is over the limit
    response = upload(client, auth)
    assert response.status_code == 413
    assert "Firmware images may be at most 0 MiB." in response.get_data(as_text=True)
    app.config["MAX_CONTENT_LENGTH"] = 1000  # the whole request is over the limit
    response = upload(client, auth)
    assert response.status_code == 413 and "at most 0 MiB" in response.get_data(as_text=True)
    assert Firmware.objects.count() == 0 and get_db()["fs.chunks"].count_documents({}) == 0


def test_viewers_cannot_upload_or_start_updates(client, auth):
    """Only admins and operators change firmware."""
    auth.login("viewer@example.com", role="viewer")
    assert client.get("/firmware/upload").status_code == 403
    assert client.get("/firmware").status_code == 200
    token = auth.token("/firmware")
    assert client.post("/firmware/devices/car-1/update", data={"csrf_token": token}).status_code == 403


def test_pages_need_a_login_but_the_download_does_not(client):
    """Firmware pages redirect to the login; the download answers 403 to a bad token, not a redirect."""
    assert client.get("/firmware").status_code == 302
    assert client.get("/firmware/download/not-a-token").status_code == 403


def rollout_form(client, auth, firmware, **fields):
    """Post the rollout form of an image."""
    path = f"/firmware/{firmware.pk}/rollout"
    data = {"csrf_token": auth.token(path), "target": "devices", "waves": "100", "threshold": "0.2"}
    data.update({"retries": "2", "timeout": "600", **fields})
    return client.post(path, data=data)


def test_rollout_form_starts_waves_over_the_chosen_devices(client, auth):
    """Ten devices, waves 20/100: two jobs sent, eight queued; the rollout page counts them per state."""
    auth.login()
    firmware = store_firmware(io.BytesIO(IMAGE), "ecu", "2.0.0")
    ids = [f"car-{n}" for n in range(10)]
    for device_id in ids:
        Device(device_id=device_id).save()
    response = rollout_form(client, auth, firmware, devices="\n".join(ids), waves="20,100")
    rollout = Rollout.objects.get()
    assert response.status_code == 302 and response.location.endswith(f"/firmware/rollouts/{rollout.pk}")
    states = sorted(j.state for j in UpdateJob.objects(rollout_id=rollout.pk))
    assert states == ["QUEUED"] * 8 + ["SENT"] * 2
    page = client.get(response.location).get_data(as_text=True)
    assert re.search(r'data-count-state="SENT">.*?<b data-field="count">2</b>', page)
    assert re.search(r'data-count-state="QUEUED">.*?<b data-field="count">8</b>', page)
    assert 'data-size="2"' in page and 'data-size="8"' in page


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"devices": "ghost"}, "unknown device: ghost"),
        ({"devices": "car-1", "waves": "50"}, "the last wave must be 100 %"),
        ({"devices": "car-1", "waves": "x"}, "whole percentages"),
        ({"devices": "car-1", "threshold": "0"}, "Failure threshold"),
        ({"target": "version", "from_version": "0.0.1"}, "no device is on version 0.0.1"),
    ],
)
def test_rollout_form_explains_what_is_wrong(client, auth, fields, error):
    """Unknown devices, bad waves or threshold, an empty version selection: the form says so."""
    auth.login()
    firmware = store_firmware(io.BytesIO(IMAGE), "ecu", "2.0.0")
    Device(device_id="car-1", fw_version="1.0.0").save()
    response = rollout_form(client, auth, firmware, **fields)
    assert response.status_code == 200 and error in response.get_data(as_text=True)
    assert Rollout.objects.count() == 0


def test_rollout_to_all_devices_on_a_version(client, auth):
    """`All devices on version` picks exactly the devices on it."""
    auth.login()
    firmware = store_firmware(io.BytesIO(IMAGE), "ecu", "2.0.0")
    for device_id, version in (("a", "1.0"), ("b", "1.0"), ("c", "1.1")):
        Device(device_id=device_id, fw_version=version).save()
    rollout_form(client, auth, firmware, target="version", from_version="1.0")
    assert sorted(j.device_id for j in UpdateJob.objects) == ["a", "b"]


def test_device_page_starts_an_update_and_shows_its_history(client, auth):
    """The device page's form starts a one-device rollout; the history lists the job."""
    auth.login()
    firmware = store_firmware(io.BytesIO(IMAGE), "ecu", "2.0.0")
    Device(device_id="car-7", fw_version="1.0.0").save()
    page = client.get("/devices/car-7").get_data(as_text=True)
    assert "No updates yet." in page and f'value="{firmware.pk}"' in page
    response = client.post(
        "/firmware/devices/car-7/update", data={"csrf_token": csrf_token(page), "firmware": str(firmware.pk)}
    )
    assert response.status_code == 302 and response.location.endswith("/devices/car-7")
    job = UpdateJob.objects.get(device_id="car-7")
    assert job.state == "SENT" and job.attempts == 1
    page = client.get("/devices/car-7").get_data(as_text=True)
    assert f'data-job-id="{job.pk}"' in page and 'data-state="SENT"' in page
    again = client.post(
        "/firmware/devices/car-7/update", data={"csrf_token": csrf_token(page), "firmware": str(firmware.pk)}
    )
    assert "already being updated" in client.get(again.location).get_data(as_text=True)


def test_delete_is_refused_with_unfinished_jobs_and_removes_everything_after(client, auth, app):
    """While a job is unfinished the image stays; once canceled it goes with its rollouts, jobs and bytes."""
    auth.login()
    firmware = store_firmware(io.BytesIO(IMAGE), "ecu", "2.0.0")
    Device(device_id="car-1").save()
    rollout_form(client, auth, firmware, devices="car-1")
    path = f"/firmware/{firmware.pk}/delete"
    refused = client.post(path, data={"csrf_token": auth.token(path)})
    assert "unfinished update jobs" in client.get(refused.location).get_data(as_text=True)
    assert Firmware.objects.count() == 1
    rollout = Rollout.objects.get()
    control = f"/firmware/rollouts/{rollout.pk}/cancel"
    client.post(control, data={"csrf_token": auth.token(f"/firmware/rollouts/{rollout.pk}")})
    assert Rollout.objects.get().state == "CANCELED"
    deleted = client.post(path, data={"csrf_token": auth.token(path)})
    assert deleted.status_code == 302 and deleted.location.endswith("/firmware")
    assert Firmware.objects.count() == Rollout.objects.count() == UpdateJob.objects.count() == 0
    assert get_db()["fs.files"].count_documents({}) == get_db()["fs.chunks"].count_documents({}) == 0


def test_resume_of_a_running_rollout_is_refused_with_a_message(client, auth):
    """Resume only applies to a halted rollout; the page says why otherwise."""
    auth.login()
    firmware = store_firmware(io.BytesIO(IMAGE), "ecu", "2.0.0")
    Device(device_id="car-1").save()
    rollout_form(client, auth, firmware, devices="car-1")
    rollout = Rollout.objects.get()
    token = auth.token(f"/firmware/rollouts/{rollout.pk}")
    response = client.post(f"/firmware/rollouts/{rollout.pk}/resume", data={"csrf_token": token})
    assert "only a halted rollout can be resumed" in client.get(response.location).get_data(as_text=True)
    assert (
        client.post(f"/firmware/rollouts/{rollout.pk}/explode", data={"csrf_token": token}).status_code == 400
    )


def one_job_with_its_link(client, auth, app):
    """Log in, start a rollout to one device; its job and the job's download path."""
    auth.login()
    firmware = store_firmware(io.BytesIO(IMAGE), "ecu", "2.0.0")
    Device(device_id="car-1").save()
    rollout_form(client, auth, firmware, devices="car-1")
    job = UpdateJob.objects.get()
    return job, signed_download_url(app.config, job.pk, "car-1")[0].removeprefix(
        app.config["CARWEB_PUBLIC_URL"]
    )


def test_download_serves_a_job_until_it_is_canceled(client, auth, app):
    """The signed link works without a login; once its job is canceled it gets 403."""
    job, url = one_job_with_its_link(client, auth, app)
    client.post("/logout", data={"csrf_token": auth.token()})
    whole = client.get(url)
    assert whole.status_code == 200 and whole.data == IMAGE
    part = client.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.data == IMAGE[10:20]
    auth.login()
    rollout = Rollout.objects.get()
    client.post(
        f"/firmware/rollouts/{rollout.pk}/cancel",
        data={"csrf_token": auth.token(f"/firmware/rollouts/{rollout.pk}")},
    )
    assert client.get(url).status_code == 403


@pytest.mark.parametrize("state", ["UPDATED", "FAILED", "REJECTED", "TIMED_OUT"])
def test_download_token_stops_working_once_its_job_has_ended(client, auth, app, state):
    """A device that finished, failed or timed out cannot fetch the image again with its old link."""
    job, url = one_job_with_its_link(client, auth, app)
    assert client.get(url, headers={"Range": "bytes=0-9"}).status_code == 206
    UpdateJob.objects(pk=job.pk).update_one(set__state=state)
    assert client.get(url).status_code == 403


def test_an_image_page_lists_its_jobs_by_keyset_pages(client, auth, app):
    """250 jobs: pages of 100, 100 and 50, newest first, each job once; a bad cursor is a 400."""
    firmware, rollout = rollout_of_250(client, auth, app)
    wanted = [job.device_id for job in UpdateJob.objects(firmware_id=firmware.pk).order_by("-id")]
    seen, sizes = read_pages(
        client, f"/firmware/{firmware.pk}", r"/firmware/[0-9a-f]{24}\?before=[0-9a-f]{24}"
    )
    assert seen == wanted and sizes == [100, 100, 50]
    assert client.get(f"/firmware/{firmware.pk}?before=nope").status_code == 400


def rollout_of_250(client, auth, app):
    """Log in; an image and a rollout of it to 250 devices in waves of 20 % and 100 %."""
    auth.login()
    firmware = store_firmware(io.BytesIO(IMAGE), "ecu", "3.0.0")
    ids = [f"pg-{n:03d}" for n in range(250)]
    for device_id in ids:
        Device(device_id=device_id).save()
    return firmware, create_rollout(app, firmware, ids, waves=(20, 100))


def read_pages(client, path, older_link):
    """Follow a list's 'older' links from `path`; the device ids of its job rows, and each page's size."""
    seen, sizes = [], []
    while path:
        page = client.get(path).get_data(as_text=True)
        rows = re.findall(r'href="/devices/(pg-\d{3})"', page)
        seen += rows
        sizes.append(len(rows))
        older = re.search(f'href="({older_link})"', page)
        path = older.group(1) if older else None
    return seen, sizes


def test_a_rollout_page_lists_its_jobs_by_pages_and_counts_them_all(client, auth, app):
    """250 jobs: pages of 100, 100 and 50 by device id; every page counts all 250 per state and wave."""
    _, rollout = rollout_of_250(client, auth, app)
    path = f"/firmware/rollouts/{rollout.pk}"
    seen, sizes = read_pages(client, path, r"/firmware/rollouts/[0-9a-f]{24}\?after=pg-\d{3}")
    assert seen == [f"pg-{n:03d}" for n in range(250)] and sizes == [100, 100, 50]
    page = client.get(path + "?after=pg-200").get_data(as_text=True)
    assert re.search(r'data-count-state="SENT">.*?<b data-field="count">50</b>', page)
    assert re.search(r'data-count-state="QUEUED">.*?<b data-field="count">200</b>', page)
    assert 'data-size="50"' in page and 'data-size="200"' in page
    assert client.get(path + "?after=" + "x" * 300).status_code == 400
