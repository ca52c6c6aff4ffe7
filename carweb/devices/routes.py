"""Views of the devices blueprint."""

import csv
import io
from datetime import UTC, datetime

from bson import ObjectId
from flask import Response, abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from marshmallow import ValidationError
from werkzeug.utils import secure_filename

from carweb import audit
from carweb.auth import role_required
from carweb.background import bridge_state
from carweb.devices import bp
from carweb.devices.forms import (
    AddDeviceForm,
    DeleteForm,
    DeviceTokenForm,
    HistoryFilterForm,
    RenameForm,
    SearchForm,
)
from carweb.firmware.forms import DeviceUpdateForm
from carweb.fleet import device_page, register_device
from carweb.history import HistoryQuery, decode_cursor, message_page
from carweb.live import device_summary, job_summary, message_summary
from carweb.models import Device, DeviceToken, Message, Rollup
from carweb.models.user import ADMINS, OPERATORS
from carweb.ota.jobs import latest_jobs
from carweb.telemetry.charts import chart
from carweb.telemetry.page import PAGE_RANGES, chart_rows, first_chart_query, iso_time, recent_series
from carweb.users.forms import RevokeForm
from carweb.users.tokens import revoke_token


def device_or_404(device_id):
    """The device with this id, or a 404 page."""
    return Device.objects(device_id=device_id).first() or abort(404)


@bp.route("")
def index():
    """Every device, most recently seen first, by pages below a place; searchable by id or name."""
    form = SearchForm(request.args)
    valid = form.validate()
    search = (form.q.data or "").strip() if valid else ""
    before = form.before.data if valid else None
    page = device_page(before=before, limit=current_app.config["CARWEB_PAGE_SIZE"], search=search or None)
    return render_template(
        "devices/index.html",
        form=form,
        add_form=AddDeviceForm(),
        search=search,
        first=before is None,
        devices=[device_summary(row) for row in page.devices],
        page=page,
    )


def stored_seq(device_id):
    """The newest number the bridge of this process counted as stored for the device, or 0."""
    state = bridge_state(current_app, device_id)
    return state.recorded_seq if state else 0


@bp.route("/add", methods=["POST"])
@role_required(OPERATORS)
def add():
    """Add a device by its id before it first speaks (to give it tokens, or include it in a rollout)."""
    form = AddDeviceForm()
    if not form.validate_on_submit():
        flash("A device id of 1 to 128 characters is required.", "error")
        return redirect(url_for("devices.index"))
    try:
        device = register_device(form.device_id.data.strip())
    except ValueError as exc:
        flash(str(exc), "error")
        return redirect(url_for("devices.index"))
    audit.record("device added", device.device_id)
    flash(f"Device {device.device_id} added.", "success")
    return redirect(url_for("devices.show", device_id=device.device_id))


@bp.route("/<device_id>")
def show(device_id):
    """A device and its message history, newest first."""
    return render_device(device_or_404(device_id))


@bp.route("/<device_id>/tokens", methods=["POST"])
@role_required(OPERATORS)
def create_token(device_id):
    """Make a token for the device and show it this once (it is stored hashed)."""
    device = device_or_404(device_id)
    form = DeviceTokenForm()
    if form.validate_on_submit():
        try:
            token, secret = DeviceToken.create(device.device_id, form.name.data)
        except ValueError as exc:
            form.name.errors.append(str(exc))
        else:
            audit.record("device token created", device.device_id, name=token.name)
            return render_device(device, new_token=secret)
    return render_device(device, token_form=form)


@bp.route("/<device_id>/tokens/<token_id>/revoke", methods=["POST"])
@role_required(OPERATORS)
def revoke_device_token(device_id, token_id):
    """Revoke one of the device's tokens: it stops working at once."""
    revoke_token(DeviceToken.of_device(device_id), token_id, "device token revoked", device_id)
    return redirect(url_for("devices.show", device_id=device_id))


def render_device(device, new_token=None, token_form=None):
    """The device's page for this request's filters; 400 when a filter or the token form was refused."""
    device_id = device.device_id
    form = HistoryFilterForm(request.args)
    if form.validate():
        query = HistoryQuery(
            before=decode_cursor(form.before.data) if form.before.data else None,
            topic=form.topic.data or None,
            since=form.utc(form.since),
            until=form.utc(form.until),
            limit=current_app.config["CARWEB_PAGE_SIZE"],
        )
        page = message_page(device, query, known_seq=stored_seq(device_id))
    else:
        page = None
    series = recent_series(device, known_seq=stored_seq(device_id))
    chart = first_chart_query(request.args, series, datetime.now(UTC))
    html = render_template(
        "devices/show.html",
        device=device,
        form=form,
        messages=[message_summary(doc) for doc in page.messages] if page else [],
        page=page,
        live_after=page.live_after if page else "0",
        filtered=bool(request.args.get("topic") or request.args.get("since") or request.args.get("until")),
        rename_form=RenameForm(name=device.name),
        update_form=DeviceUpdateForm().set_choices(),
        updates=[job_summary(job) for job in latest_jobs(device_id)],
        tokens=DeviceToken.of_device(device_id) if current_user.can_operate() else [],
        token_form=token_form or DeviceTokenForm(),
        revoke=RevokeForm(),
        new_token=new_token,
        series=series,
        chart_ranges=PAGE_RANGES,
        chart_url=url_for("devices.telemetry", device_id=device_id, **chart) if chart else None,
    )
    refused = page is None or (token_form is not None and token_form.errors)
    return html, 400 if refused else 200  # the page says what is wrong


@bp.route("/<device_id>/telemetry")
def telemetry(device_id):
    """A device's series over a time range as JSON or CSV: buckets of min, max and mean (the page's charts)."""
    # The API's schema, imported here: carweb.api.v1 imports this module.
    from carweb.api.v1.schemas import TelemetryArgs

    device = device_or_404(device_id)
    try:
        args = TelemetryArgs().load({**request.args.to_dict(), "series": request.args.getlist("series")})
    except ValidationError as exc:
        return jsonify(code=400, status="Bad Request", message="Invalid arguments.", errors=exc.messages), 400
    return chart_response(device, **args)


def chart_response(device, series, points, format, since=None, until=None):
    """The chart of `series` (the device's recent ones when empty) as JSON or as a CSV download."""
    known = stored_seq(device.device_id)
    names = series or [found["name"] for found in recent_series(device, known)]
    result = chart(device, names, since, until, points, known_seq=known)
    if format == "csv":
        out = io.StringIO()
        csv.writer(out).writerows(chart_rows(result))
        filename = f"{secure_filename(device.device_id) or 'device'}-telemetry.csv"
        headers = {"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"}
        return Response(out.getvalue(), content_type="text/csv; charset=utf-8", headers=headers)
    return jsonify(
        device_id=device.device_id,
        since=iso_time(result.since),
        until=iso_time(result.until),
        bucket_seconds=result.bucket_seconds,
        source=result.source,
        series=result.series,
    )


@bp.route("/<device_id>/rename", methods=["POST"])
@role_required(OPERATORS)
def rename(device_id):
    """Give a device a display name."""
    device = device_or_404(device_id)
    form = RenameForm()
    if form.validate_on_submit():
        device.update(set__name=form.name.data.strip())
        audit.record("device renamed", device_id, name=form.name.data.strip())
        flash("Device renamed.", "success")
    else:
        flash("A name of 1 to 200 characters is required.", "error")
    return redirect(url_for("devices.show", device_id=device_id))


@bp.route("/<device_id>/delete", methods=["GET", "POST"])
@role_required(ADMINS)
def delete(device_id):
    """Ask for confirmation, then delete a device and every message it sent."""
    device = device_or_404(device_id)
    form = DeleteForm()
    if form.validate_on_submit():
        deleted = Message.objects(device_id=device_id).delete()
        Rollup.objects(device_id=device_id).delete()
        device.delete()
        audit.record("device deleted", device_id, messages=deleted)
        flash(f"Device {device_id} and its {deleted} messages were deleted.", "success")
        return redirect(url_for("devices.index"))
    return render_template("devices/delete.html", device=device, form=form)


@bp.route("/<device_id>/messages/<message_id>/payload")
def payload(device_id, message_id):
    """The stored payload bytes of one message, as a download."""
    if not ObjectId.is_valid(message_id):
        abort(404)
    doc = Message.objects(device_id=device_id, id=message_id).only("payload").as_pymongo().first()
    if doc is None:
        abort(404)
    return Response(
        bytes(doc.get("payload") or b""),
        mimetype="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{message_id}.bin"',
            "X-Content-Type-Options": "nosniff",
        },
    )
