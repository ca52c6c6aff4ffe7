"""Views of the devices blueprint."""

from bson import ObjectId
from flask import Response, abort, current_app, flash, redirect, render_template, request, url_for

from carweb import audit
from carweb.auth import role_required
from carweb.background import bridge_state
from carweb.devices import bp
from carweb.devices.forms import DeleteForm, HistoryFilterForm, RenameForm, SearchForm
from carweb.firmware.forms import DeviceUpdateForm
from carweb.fleet import device_page
from carweb.history import HistoryQuery, decode_cursor, message_page
from carweb.live import device_summary, job_summary, message_summary
from carweb.models import Device, Message
from carweb.models.user import ADMINS, OPERATORS
from carweb.ota.jobs import latest_jobs


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
        search=search,
        first=before is None,
        devices=[device_summary(row) for row in page.devices],
        page=page,
    )


def stored_seq(device_id):
    """The newest number the bridge of this process counted as stored for the device, or 0."""
    state = bridge_state(current_app, device_id)
    return state.recorded_seq if state else 0


@bp.route("/<device_id>")
def show(device_id):
    """A device and its message history, newest first."""
    device = device_or_404(device_id)
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
    )
    return html, 200 if page else 400  # a filter the form refused: the page says what is wrong


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
