"""`flask --app carweb firmware ...`: the firmware commands build pipelines rely on (stable)."""

import hashlib
import json
import os

import click
from bson import ObjectId
from flask import current_app
from flask.cli import AppGroup

from carweb.firmware import app_object
from carweb.models import Firmware, Rollout, ensure_indexes
from carweb.models.firmware import DEFAULT_FAILURE_THRESHOLD, DEFAULT_RETRY_LIMIT, DEFAULT_STEP_TIMEOUT
from carweb.ota.rollouts import (
    RolloutError,
    cancel_rollout,
    create_rollout,
    parse_waves,
    resume_rollout,
    rollout_status,
    select_targets,
)
from carweb.ota.signing import MAX_SIGNATURE_FILE, SignatureError, generate_key, load_private_key, sign
from carweb.ota.store import FirmwareError, max_image_bytes, store_firmware, trusted_keys

firmware_cli = AppGroup("firmware", help="Firmware images and rollouts.")


def _rollout(rollout_id):
    """The rollout with this id, or a one-line error."""
    rollout = Rollout.objects(pk=rollout_id).first() if ObjectId.is_valid(rollout_id) else None
    if rollout is None:
        raise click.ClickException(f"unknown rollout {rollout_id}")
    return rollout


@firmware_cli.command("upload")
@click.argument("file", type=click.File("rb"))
@click.option("--title", required=True, help="The image's title, e.g. the product.")
@click.option("--version", "version", required=True, help="The image's version; title + version is unique.")
@click.option("--notes", default=None, help="Release notes.")
@click.option(
    "--signature",
    type=click.File("r", encoding="utf-8"),
    default=None,
    help="The signature file `firmware sign` made (required when CARWEB_FIRMWARE_KEYS is set).",
)
def upload(file, title, version, notes, signature):
    """Store FILE as a firmware image; print its id and SHA-256."""
    ensure_indexes()
    try:
        firmware = store_firmware(
            file,
            title,
            version,
            notes=notes,
            max_bytes=max_image_bytes(current_app.config),
            signature=signature.read(MAX_SIGNATURE_FILE) if signature else None,
            keys=trusted_keys(current_app.config),
        )
    except FirmwareError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{firmware.pk} {firmware.sha256}")


@firmware_cli.command("rollout")
@click.argument("title")
@click.argument("version")
@click.option("--devices", default=None, help="Comma-separated device ids.")
@click.option("--all", "all_devices", is_flag=True, help="Every device.")
@click.option("--from-version", default=None, help="Every device on this firmware version.")
@click.option("--waves", default="100", show_default=True, help="Cumulative percentages, e.g. 10,50,100.")
@click.option(
    "--threshold",
    type=float,
    default=DEFAULT_FAILURE_THRESHOLD,
    show_default=True,
    help="Failure rate that halts a wave.",
)
@click.option(
    "--retries",
    type=int,
    default=DEFAULT_RETRY_LIMIT,
    show_default=True,
    help="Retries of a failed or timed-out job.",
)
@click.option(
    "--timeout",
    type=int,
    default=DEFAULT_STEP_TIMEOUT,
    show_default=True,
    help="Seconds a job may go without a report.",
)
def rollout(title, version, devices, all_devices, from_version, waves, threshold, retries, timeout):
    """Start a rollout of TITLE VERSION; print the rollout's id."""
    if sum(bool(x) for x in (devices, all_devices, from_version)) != 1:
        raise click.ClickException("give exactly one of --devices, --all, --from-version")
    firmware = Firmware.objects(title=title, version=version).first()
    if firmware is None:
        raise click.ClickException(f"unknown firmware {title} {version}")
    ensure_indexes()
    try:
        targets = select_targets(
            device_ids=devices.split(",") if devices else None,
            all_devices=all_devices,
            from_version=from_version,
        )
        created = create_rollout(
            app_object(),
            firmware,
            targets,
            waves=parse_waves(waves),
            failure_threshold=threshold,
            retry_limit=retries,
            step_timeout=timeout,
            created_by="cli",
        )
    except RolloutError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(str(created.pk))


@firmware_cli.command("status")
@click.argument("rollout_id")
@click.option("--json", "as_json", is_flag=True, help="Print {id, state, jobs: [{device_id, state}]}.")
def status(rollout_id, as_json):
    """Print a rollout's state and each job's state."""
    report = rollout_status(_rollout(rollout_id))
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"rollout {report['id']}: {report['state']}")
    for job in report["jobs"]:
        click.echo(f"  {job['device_id']}  {job['state']}")


def _control(step, rollout_id):
    """Run resume or cancel on a rollout and print its new state."""
    try:
        click.echo(step(app_object(), _rollout(rollout_id).pk).state)
    except RolloutError as exc:
        raise click.ClickException(str(exc)) from exc


@firmware_cli.command("resume")
@click.argument("rollout_id")
def resume(rollout_id):
    """Resume a halted rollout with its next wave."""
    _control(resume_rollout, rollout_id)


@firmware_cli.command("cancel")
@click.argument("rollout_id")
def cancel(rollout_id):
    """Cancel a running or halted rollout."""
    _control(cancel_rollout, rollout_id)


@firmware_cli.command("keygen")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, writable=True),
    required=True,
    help="Where the private key goes (PEM).",
)
def keygen(out):
    """Make a signing key for the build pipeline; print the line for CARWEB_FIRMWARE_KEYS.

    The private key never goes to the server: keep it where images are built.
    """
    if os.path.exists(out):
        raise click.ClickException(f"{out} exists; choose another file (keys are never overwritten)")
    pem, public_line = generate_key()
    descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    click.echo(public_line)


@firmware_cli.command("sign")
@click.argument("file", type=click.File("rb"))
@click.option(
    "--key", "key_file", type=click.File("rb"), required=True, help="The private key (PEM) from keygen."
)
@click.option("--title", required=True, help="The title the image will be uploaded with.")
@click.option("--version", "version", required=True, help="The version it will be uploaded with.")
@click.option("--out", default=None, help="The signature file (default: FILE.sig).")
def sign_image(file, key_file, title, version, out):
    """Sign FILE as TITLE VERSION for upload; print the signature file's path."""
    try:
        key = load_private_key(key_file.read())
    except SignatureError as exc:
        raise click.ClickException(str(exc)) from exc
    digest = hashlib.sha256()
    while block := file.read(1024 * 1024):
        digest.update(block)
    out = out or f"{file.name}.sig"
    with open(out, "w", encoding="utf-8") as signature:
        signature.write(sign(key, title.strip(), version.strip(), digest.hexdigest()))
    click.echo(out)
