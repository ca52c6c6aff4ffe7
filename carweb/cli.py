"""`flask --app carweb ...` commands: users, database, bridge, simulator."""

import os
import secrets
import sys
from contextlib import contextmanager

import click
from flask import current_app
from flask.cli import AppGroup

from carweb import audit
from carweb.devices.cli import device_cli
from carweb.firmware.cli import firmware_cli
from carweb.fleet import register_device
from carweb.models import ApiToken, Device, DeviceToken, User, ensure_indexes
from carweb.models.token import MAX_EXPIRES_DAYS
from carweb.models.user import MIN_PASSWORD, ROLES
from carweb.upgrade import prepare_database

bridge_cli = AppGroup("bridge", help="The MQTT bridge.")
SIMULATOR_TOKEN = "simulator"


def init_app(app):
    """Register the commands on the app."""
    app.cli.add_command(create_user)
    app.cli.add_command(create_token)
    app.cli.add_command(init_db)
    app.cli.add_command(ensure_admin)
    app.cli.add_command(bridge_cli)
    app.cli.add_command(simulate)
    app.cli.add_command(firmware_cli)
    app.cli.add_command(device_cli)


@click.command("create-user")
@click.argument("email")
@click.option("--role", type=click.Choice(ROLES), default="operator", show_default=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def create_user(email, role, password_stdin):
    """Create a user, or reset the password and role of an existing one."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD:
        raise click.ClickException(f"the password must have at least {MIN_PASSWORD} characters")
    ensure_indexes()
    user = User.create_or_update(email, password, role=role)
    click.echo(f"user {user.email} ({user.role}) saved")


@click.command("create-token")
@click.argument("email")
@click.option("--name", required=True, help="What the token is for, as its owner will see it listed.")
@click.option(
    "--expires-days", type=click.IntRange(1, MAX_EXPIRES_DAYS), help="Days until it expires (never if unset)."
)
def create_token(email, name, expires_days):
    """Print a new API token of user EMAIL (for automation); it acts with the user's role."""
    user = User.find_by_email(email)
    if user is None or not user.active:
        raise click.ClickException(f"no active user {email}")
    try:
        token, secret = ApiToken.create(user, name, expires_days)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    audit.record(
        "token created", user.email, who=user.email, via="cli", name=token.name, expires_at=token.expires_at
    )
    click.echo(secret)


@click.command("init-db")
def init_db():
    """Create the collections' indexes and upgrade data of earlier versions (idempotent)."""
    prepare_database()
    click.echo("indexes ready")


def bootstrap_admin(email=None, password=None):
    """Create/update the configured admin, or make one with a random password when no user exists.

    Returns (email, password) when a password was generated and must be shown once, else None.
    """
    if email and password:
        if len(password) < MIN_PASSWORD:
            raise click.ClickException(f"CARWEB_ADMIN_PASSWORD must have at least {MIN_PASSWORD} characters")
        User.create_or_update(email, password, role="admin")
        return None
    if User.objects.first() is not None:
        return None
    generated = secrets.token_urlsafe(12)
    User.create_or_update("admin@localhost", generated, role="admin")
    return "admin@localhost", generated


@click.command("ensure-admin")
def ensure_admin():
    """Apply CARWEB_ADMIN_EMAIL/CARWEB_ADMIN_PASSWORD, or create a first admin if there is none."""
    ensure_indexes()
    created = bootstrap_admin(os.environ.get("CARWEB_ADMIN_EMAIL"), os.environ.get("CARWEB_ADMIN_PASSWORD"))
    if created:
        click.echo(f"created admin {created[0]} with password {created[1]} (shown once)")


@bridge_cli.command("run")
def bridge_run():
    """Run the bridge in this process (use CARWEB_BRIDGE=external in the web processes)."""
    os.execv(sys.executable, [sys.executable, "-m", "carweb.bridge"])


@click.command("simulate")
@click.option("--devices", "count", type=click.IntRange(1, 10000), default=10, show_default=True)
@click.option(
    "--rate",
    type=click.FloatRange(0.001, 1000),
    default=1.0,
    show_default=True,
    help="Messages per second per device.",
)
@click.option(
    "--transport",
    type=click.Choice(["mqtt", "ws"]),
    default="mqtt",
    show_default=True,
    help="MQTT to the broker, or carweb's device WebSocket (each car gets a device token for the run).",
)
@click.option("--mqtt-url", default=None, help="Broker URL (default: MQTT_URL).")
@click.option(
    "--url", "carweb_url", default=None, help="carweb's URL for --transport ws (default: CARWEB_PUBLIC_URL)."
)
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option(
    "--prefix",
    default="sim",
    show_default=True,
    help="Device ids are UUIDs made from <prefix>-<n>, the same on every run.",
)
@click.option(
    "--fail-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of firmware updates whose checksum check fails.",
)
@click.option(
    "--step-delay", type=click.FloatRange(0), default=0.0, show_default=True, help="Seconds per update step."
)
@click.option("--chunks", is_flag=True, help="Download firmware over MQTT chunks instead of HTTP.")
@click.option(
    "--keys",
    "keys_file",
    default=None,
    help="Public keys the cars trust; they reject images whose signature does not verify "
    "(default: CARWEB_FIRMWARE_KEYS; neither: they check the SHA-256 only).",
)
def simulate(
    count, rate, transport, mqtt_url, carweb_url, duration, prefix, fail_rate, step_delay, chunks, keys_file
):
    """Run a fleet of simulated cars that publish telemetry and take firmware updates."""
    from carweb.ota.signing import SignatureError, load_public_keys
    from carweb.simulator import Fleet, simulated_device_id
    from carweb.simulator_updates import UpdateBehaviour
    from carweb.simulator_ws import socket_url

    keys_file = keys_file or current_app.config.get("CARWEB_FIRMWARE_KEYS")
    try:
        keys = load_public_keys(keys_file) if keys_file else None
    except SignatureError as exc:
        raise click.ClickException(str(exc)) from exc
    updates = UpdateBehaviour(fail_rate=fail_rate, step_delay=step_delay, chunks=chunks, keys=keys)
    if transport == "mqtt":
        fleet = Fleet(mqtt_url or current_app.config["MQTT_URL"], count, rate, prefix=prefix, updates=updates)
        click.echo(f"simulating {count} devices at {rate} msg/s each on {fleet.url}")
        fleet.run(duration=duration)
        return
    url = carweb_url or current_app.config["CARWEB_PUBLIC_URL"]
    device_ids = [simulated_device_id(prefix, n) for n in range(count)]
    with simulator_tokens(device_ids) as tokens:
        fleet = Fleet(url, count, rate, prefix=prefix, updates=updates, sockets=tokens)
        click.echo(f"simulating {count} devices at {rate} msg/s each over {socket_url(url)}")
        fleet.run(duration=duration)


@contextmanager
def simulator_tokens(device_ids):
    """A device token per simulated car, for one run: the cars are added if new; the tokens revoked after."""
    ensure_indexes()
    for device_id in device_ids:
        if Device.objects(device_id=device_id).first() is None:
            register_device(device_id)
    DeviceToken.objects(device_id__in=device_ids, name=SIMULATOR_TOKEN).delete()  # left by a killed run
    tokens = {device_id: DeviceToken.create(device_id, SIMULATOR_TOKEN)[1] for device_id in device_ids}
    try:
        yield tokens
    finally:
        DeviceToken.objects(device_id__in=device_ids, name=SIMULATOR_TOKEN).delete()
