"""Views of the devices blueprint."""

from datetime import UTC, datetime

from flask import Response, abort, current_app, flash, redirect, render_template, request, url_for
from mongoengine.queryset.visitor import Q

from carweb.auth import role_required
from carweb.devices import bp
from carweb.devices.forms import DeleteForm, HistoryFilterForm, RenameForm, SearchForm
from carweb.firmware.forms import DeviceUpdateForm
from carweb.history import HistoryQuery, cursor_at, decode_cursor, encode_cursor, message_page
from carweb.live import device_summary, job_summary, message_summary
from carweb.models import Device, Message
from carweb.ota.jobs import latest_jobs

WRITERS = ("admin", "operator")


def device_or_404(device_id):
    """The device with this id, or a 404 page."""
    return Device.objects(device_id=device_id).first() or abort(404)


@bp.route("")
def index():
    """Every device, most recently seen first, searchable by id or name."""
    form = SearchForm(request.args)
    page = max(request.args.get("page", 1, type=int), 1)
    size = current_app.config["CARWEB_PAGE_SIZE"]
    devices = Device.objects.order_by("-last_seen_at", "device_id")
    if form.validate() and form.q.data:
        devices = devices.filter(Q(device_id__icontains=form.q.data) | Q(name__icontains=form.q.data))
    rows = list(devices.skip((page - 1) * size).limit(size + 1).as_pymongo())
    return render_template(
        "devices/index.html",
        form=form,
        devices=[device_summary(row) for row in rows[:size]],
        page=page,
        has_next=len(rows) > size,
    )


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
        page = message_page(device, query)
    else:
        page = None
    return render_template(
        "devices/show.html",
        device=device,
        form=form,
        messages=[message_summary(doc) for doc in page.messages] if page else [],
        older=page.older if page else None,
        live_after=encode_cursor(page.messages[0])
        if page and page.messages
        else cursor_at(datetime.now(UTC)),
        filtered=bool(request.args.get("topic") or request.args.get("since") or request.args.get("until")),
        rename_form=RenameForm(name=device.name),
        update_form=DeviceUpdateForm().set_choices(),
        updates=[job_summary(job) for job in latest_jobs(device_id)],
    )


@bp.route("/<device_id>/rename", methods=["POST"])
@role_required(*WRITERS)
def rename(device_id):
    """Give a device a display name."""
    device = device_or_404(device_id)
    form = RenameForm()
    if form.validate_on_submit():
        device.update(set__name=form.name.data.strip())
        flash("Device renamed.", "success")
    else:
        flash("A name of 1 to 200 characters is required.", "error")
    return redirect(url_for("devices.show", device_id=device_id))


@bp.route("/<device_id>/delete", methods=["GET", "POST"])
@role_required(*WRITERS)
def delete(device_id):
    """Ask for confirmation, then delete a device and every message it sent."""
    device = device_or_404(device_id)
    form = DeleteForm()
    if form.validate_on_submit():
        deleted = Message.objects(device_id=device_id).delete()
        device.delete()
        flash(f"Device {device_id} and its {deleted} messages were deleted.", "success")
        return redirect(url_for("devices.index"))
    return render_template("devices/delete.html", device=device, form=form)


@bp.route("/<device_id>/messages/<message_id>/payload")
def payload(device_id, message_id):
    """The stored payload bytes of one message, as a download."""
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
