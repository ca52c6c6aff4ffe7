"""`flask --app carweb device ...`: add devices and make their tokens from scripts."""

import click
from flask.cli import AppGroup

from carweb import audit
from carweb.fleet import register_device
from carweb.models import Device, DeviceToken, ensure_indexes

device_cli = AppGroup("device", help="Devices and their tokens.")


@device_cli.command("add")
@click.argument("device_id")
def add(device_id):
    """Add DEVICE_ID before it first speaks."""
    ensure_indexes()
    try:
        device = register_device(device_id)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    audit.record("device added", device.device_id, via="cli")
    click.echo(f"device {device.device_id} added")


@device_cli.command("token")
@click.argument("device_id")
@click.option("--name", required=True, help="What the token is for, as the device's page will list it.")
def token(device_id, name):
    """Print a new token of DEVICE_ID (shown once, stored hashed)."""
    if Device.objects(device_id=device_id).first() is None:
        raise click.ClickException(
            f"unknown device {device_id} (add it with `flask --app carweb device add`)"
        )
    try:
        stored, secret = DeviceToken.create(device_id, name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    audit.record("device token created", device_id, via="cli", name=stored.name)
    click.echo(secret)
