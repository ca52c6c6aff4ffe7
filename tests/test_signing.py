"""Signed firmware: the signature's rules (pure), uploads with trusted keys, and cars that verify what they install."""

import hashlib
import io
import os
import uuid

import pytest
from bson import ObjectId
from mongoengine.connection import get_db

from carweb.devstack import free_port, stop_processes
from carweb.models import Firmware
from carweb.ota.signing import (
    SignatureError,
    generate_key,
    load_private_key,
    parse_public_keys,
    parse_signature,
    sign,
    verify,
)
from carweb.ota.store import FirmwareError, store_firmware
from tests.conftest import LiveServer, server_env, start_gunicorn
from tests.ota_support import (
    firmware_cli,
    jobs_of,
    run_cli,
    start_rollout,
    wait_for_devices,
    wait_for_rollout,
)

SHA = hashlib.sha256(b"image").hexdigest()


def new_key():
    """(private key, key file text) of a fresh signing key."""
    pem, line = generate_key()
    return load_private_key(pem), line + "\n"


def test_a_signature_verifies_for_its_image_title_and_version_only():
    """Any change of digest, title or version, or another key, fails with a reason."""
    key, line = new_key()
    keys = parse_public_keys(f"# the fleet's key\n{line}")
    key_id, signature = parse_signature(sign(key, "ecu", "2.0", SHA))
    verify(keys, "ecu", "2.0", SHA, key_id, signature)
    for title, version, sha in (("ecu", "2.1", SHA), ("bcm", "2.0", SHA), ("ecu", "2.0", "0" * 64)):
        with pytest.raises(SignatureError, match="does not match"):
            verify(keys, title, version, sha, key_id, signature)
    other, _ = new_key()
    other_id, other_signature = parse_signature(sign(other, "ecu", "2.0", SHA))
    with pytest.raises(SignatureError, match="not a trusted key"):
        verify(keys, "ecu", "2.0", SHA, other_id, other_signature)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{}",
        "not json",
        '{"key_id": "x", "signature": "AAAA"}',
        '{"key_id": 1, "signature": "' + "A" * 88 + '"}',
    ],
)
def test_a_malformed_signature_file_is_refused(text):
    """Only what `firmware sign` writes parses."""
    with pytest.raises(SignatureError, match="not one `firmware sign` makes"):
        parse_signature(text)


def test_a_key_file_line_must_name_its_own_key():
    """A key id that is not the key's, or a line that is not a key, is refused with its line number."""
    _, line = new_key()
    _, other = new_key()
    with pytest.raises(SignatureError, match="line 2"):
        parse_public_keys(f"{line}{other.split()[0]} {line.split()[1]}\n")
    with pytest.raises(SignatureError, match="line 1"):
        parse_public_keys("abc\n")


def test_with_trusted_keys_only_a_matching_signature_is_stored(app):
    """Unsigned, unknown key, another version: refused before anything is kept; the right one is stored."""
    key, line = new_key()
    keys = parse_public_keys(line)
    image = os.urandom(5000)
    digest = hashlib.sha256(image).hexdigest()
    stranger, _ = new_key()
    refusals = {
        None: "signed images only",
        sign(stranger, "ecu", "3.0", digest): "not a trusted key",
        sign(key, "ecu", "2.9", digest): "does not match",
        sign(key, "ecu", "3.0", hashlib.sha256(image + b"!").hexdigest()): "does not match",
    }
    for signature, reason in refusals.items():
        with pytest.raises(FirmwareError, match=reason):
            store_firmware(io.BytesIO(image), "ecu", "3.0", signature=signature, keys=keys)
    assert Firmware.objects.count() == 0 and get_db().fs.files.count_documents({}) == 0
    stored = store_firmware(
        io.BytesIO(image), "ecu", "3.0", signature=sign(key, "ecu", "3.0", digest), keys=keys
    )
    assert stored.key_id == line.split()[0] and stored.signature


@pytest.fixture(scope="module")
def signing(tmp_path_factory):
    """The build machine's folder: the signing key and the images it signs."""
    return tmp_path_factory.mktemp("signing")


@pytest.fixture(scope="module")
def signed_server(services, signing):
    """A carweb that takes signed images only (CARWEB_FIRMWARE_KEYS), its key made by `firmware keygen`."""
    db_name = f"signed_{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = server_env(services, db_name, port)
    server = LiveServer(f"http://127.0.0.1:{port}", services.db_uri(db_name), db_name, env)
    public_line = firmware_cli(server, "keygen", "--out", str(signing / "build.pem"))
    (signing / "trusted.keys").write_text(public_line + "\n")
    env["CARWEB_FIRMWARE_KEYS"] = str(signing / "trusted.keys")
    process = start_gunicorn(env, signing / "gunicorn.log")
    try:
        yield server
    finally:
        server.mongo.close()
        stop_processes([process])


def signed_upload(server, workdir, title, version, signed_as=None, data=None):
    """Write an image, sign it with the build key (as `signed_as` version if given), upload it; (result, bytes)."""
    data = data or os.urandom(100_000)
    path = workdir / f"{title}-{version}-{uuid.uuid4().hex[:6]}.bin"
    path.write_bytes(data)
    sig = firmware_cli(
        server,
        "sign",
        str(path),
        "--key",
        str(workdir / "build.pem"),
        "--title",
        title,
        "--version",
        signed_as or version,
    )
    return run_cli(
        server, "upload", str(path), "--title", title, "--version", version, "--signature", sig
    ), data


def test_the_cli_refuses_unsigned_and_wrongly_signed_uploads(signed_server, signing):
    """One line on standard error, exit status 1, for each refusal."""
    image = signing / "plain.bin"
    image.write_bytes(os.urandom(1000))
    unsigned = run_cli(signed_server, "upload", str(image), "--title", "ecu", "--version", "1.0")
    assert unsigned.returncode == 1 and "signed images only" in unsigned.stderr
    replayed, _ = signed_upload(signed_server, signing, "ecu", "1.1", signed_as="1.0")
    assert replayed.returncode == 1 and "does not match" in replayed.stderr
    assert signed_server.db().firmware.count_documents({}) == 0


def test_cars_install_a_signed_image_and_reject_one_swapped_after_signing(signed_server, signing, fleet):
    """Cars carrying the public key: the signed image rolls out; after the server swaps the bytes, they say REJECTED."""
    keys = parse_public_keys((signing / "trusted.keys").read_text())
    cars = fleet(4, keys=keys)
    wait_for_devices(signed_server, cars)
    ok, _ = signed_upload(signed_server, signing, "ecu", "5.0")
    assert ok.returncode == 0, ok.stderr
    rollout = start_rollout(signed_server, "ecu", "5.0", cars[:2])
    wait_for_rollout(signed_server, rollout, "COMPLETED", timeout=60)
    assert {job["state"] for job in jobs_of(signed_server, rollout)} == {"UPDATED"}

    uploaded, data = signed_upload(signed_server, signing, "ecu", "5.1")
    assert uploaded.returncode == 0, uploaded.stderr
    firmware_id, _ = uploaded.stdout.split()
    db = signed_server.db()
    swapped = bytes(b ^ 0xFF for b in data)  # what a compromised server sends instead
    file_id = db.firmware.find_one({"_id": ObjectId(firmware_id)})["file_id"]
    assert (
        db["fs.chunks"].update_one({"files_id": file_id, "n": 0}, {"$set": {"data": swapped}}).modified_count
        == 1
    )
    db.firmware.update_one(
        {"_id": ObjectId(firmware_id)}, {"$set": {"sha256": hashlib.sha256(swapped).hexdigest()}}
    )
    rollout = start_rollout(signed_server, "ecu", "5.1", cars[2:])
    wait_for_rollout(signed_server, rollout, "HALTED", timeout=60)  # every job of the wave refused
    jobs = jobs_of(signed_server, rollout)
    assert {job["state"] for job in jobs} == {"REJECTED"}
    assert all("signature check failed" in job["error"] for job in jobs)


def test_the_upload_page_takes_the_signature_file_and_says_why_it_refuses(client, auth, app, tmp_path):
    """With CARWEB_FIRMWARE_KEYS: the form's error names the problem; a matching signature uploads."""
    key, line = new_key()
    (tmp_path / "keys").write_text(line)
    app.config["CARWEB_FIRMWARE_KEYS"] = str(tmp_path / "keys")
    auth.login()
    image = os.urandom(3000)
    good = sign(key, "ecu", "7.0", hashlib.sha256(image).hexdigest())

    def post(signature):
        data = {"title": "ecu", "version": "7.0", "csrf_token": auth.token("/firmware/upload")}
        data["file"] = (io.BytesIO(image), "ecu.bin")
        if signature is not None:
            data["signature"] = (io.BytesIO(signature.encode()), "ecu.bin.sig")
        return client.post("/firmware/upload", data=data, content_type="multipart/form-data")

    unsigned = post(None)
    assert unsigned.status_code == 400 and "signed images only" in unsigned.get_data(as_text=True)
    garbage = post("{nonsense")
    assert garbage.status_code == 400 and "not one `firmware sign` makes" in garbage.get_data(as_text=True)
    assert post(good).status_code == 302
    assert Firmware.objects.get(version="7.0").key_id == line.split()[0]
