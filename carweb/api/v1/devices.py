"""API views of devices, their message history and its export: the same reads as the pages."""

from flask import Response
from flask_smorest import Blueprint
from werkzeug.utils import secure_filename

from carweb.api.v1 import guard_api_request
from carweb.api.v1.schemas import (
    ChartOut,
    DeviceListArgs,
    DeviceOut,
    DevicePage,
    ExportArgs,
    JobPage,
    MessageListArgs,
    MessagePage,
    TelemetryArgs,
)
from carweb.config import API_PREFIX
from carweb.devices.routes import chart_response, device_or_404, stored_seq
from carweb.export import FORMATS, export_messages, export_stream
from carweb.fleet import device_page
from carweb.history import HistoryQuery, message_page
from carweb.ota.jobs import latest_jobs

blp = Blueprint(
    "api_devices", __name__, url_prefix=f"{API_PREFIX}/devices", description="Devices and their messages"
)
blp.before_request(guard_api_request)
EXPORT_CONTENT = {
    FORMATS["csv"]: {
        "schema": {"type": "string", "description": "CSV: a header row, then one row per message"}
    },
    FORMATS["ndjson"]: {"schema": {"type": "string", "description": "One JSON object per line"}},
}

CHART_CONTENT = {
    "application/json": {"schema": ChartOut},
    "text/csv": {
        "schema": {"type": "string", "description": "format=csv: series, time, min, max, mean, count"}
    },
}

# Many long series names make a long address: the server in front (gunicorn: 4,094 bytes
# of request line; nginx: 8 KiB) refuses it before carweb sees it, with a page of its own.
URI_TOO_LONG = {
    "description": "The address is longer than the server in front of carweb takes: ask for fewer series at once",
    "content": {"text/html": {"schema": {"type": "string"}}},
}


def cursor_text(value):
    """A page cursor as the API hands it out: text, or None at the end of a list."""
    return None if value is None else str(value)


@blp.route("")
@blp.arguments(DeviceListArgs, location="query", as_kwargs=True)
@blp.response(200, DevicePage)
def list_devices(limit, q=None, cursor=None):
    """Devices, most recently seen first; `q` finds ids and names that contain it."""
    page = device_page(before=cursor, limit=limit, search=(q or "").strip() or None)
    return {"items": page.devices, "next_cursor": cursor_text(page.older or page.searched_to)}


@blp.route("/<device_id>")
@blp.response(200, DeviceOut)
def get_device(device_id):
    """One device."""
    return device_or_404(device_id)


@blp.route("/<device_id>/messages")
@blp.arguments(MessageListArgs, location="query", as_kwargs=True)
@blp.response(200, MessagePage)
def list_messages(device_id, limit, cursor=None, **filters):
    """A device's messages, newest first, on a topic filter and within a time range."""
    device = device_or_404(device_id)
    query = HistoryQuery(before=cursor, limit=limit, **filters)
    page = message_page(device, query, known_seq=stored_seq(device_id))
    return {
        "items": page.messages,
        "next_cursor": page.older or page.searched_to,
        "searched_to": page.searched_to_time,
    }


@blp.route("/<device_id>/messages/export")
@blp.arguments(ExportArgs, location="query", as_kwargs=True)
@blp.doc(responses={"200": {"description": "The messages, oldest first", "content": EXPORT_CONTENT}})
def export(device_id, format, **filters):
    """Every message in the range, oldest first, as CSV or NDJSON, streamed whatever the size."""
    device = device_or_404(device_id)
    docs = export_messages(device, known_seq=stored_seq(device_id), **filters)
    filename = f"{secure_filename(device_id) or 'device'}-messages.{format}"
    return Response(
        export_stream(format, docs),
        content_type=FORMATS[format],
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )


@blp.route("/<device_id>/telemetry")
@blp.arguments(TelemetryArgs, location="query", as_kwargs=True)
@blp.doc(
    responses={"200": {"description": "The series in buckets", "content": CHART_CONTENT}, "414": URI_TOO_LONG}
)
def telemetry(device_id, **args):
    """A device's numeric series over a time range, as at most `points` buckets of min, max and mean."""
    return chart_response(device_or_404(device_id), **args)


@blp.route("/<device_id>/jobs")
@blp.response(200, JobPage)
def device_jobs(device_id):
    """A device's latest firmware update jobs, newest first."""
    device_or_404(device_id)
    return {"items": list(latest_jobs(device_id)), "next_cursor": None}
