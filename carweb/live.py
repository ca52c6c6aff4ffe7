"""The one place that emits Socket.IO events, and the names of their rooms."""

from collections import defaultdict

from flask_socketio import join_room, rooms
from socketio import PubSubManager

from carweb.extensions import socketio
from carweb.history import encode_cursor
from carweb.payloads import payload_view
from carweb.telemetry.series import message_points

DEVICES_ROOM = "devices"
# Rooms one connection may be in besides its own: a page joins one to three, so this only
# stops a client that joins room after room to make every broadcast reach it.
MAX_ROOMS = 50
# One device-list event carries at most this many devices (the most recently seen): a page
# shows fifty, and thousands of devices speaking at once must not make every event huge.
DEVICES_EVENT_MAX = 500


def join(room):
    """Put the current connection in `room`; False when it is in MAX_ROOMS already (joining one again is free)."""
    joined = rooms()
    if room not in joined and len(joined) > MAX_ROOMS:  # rooms() lists the connection's own room too
        return False
    join_room(room)
    return True


def device_room(device_id):
    """The room of one device's page."""
    return f"device:{device_id}"


def message_summary(doc):
    """What a page needs to show one stored message (the page escapes every string)."""
    kind, body, hidden = payload_view(doc.get("kind"), doc.get("payload"), doc.get("text"))
    return {
        "id": str(doc["_id"]),
        "cursor": encode_cursor(doc),
        "topic": doc["topic"],
        "direction": doc.get("direction", "in"),
        "qos": doc.get("qos", 0),
        "retain": doc.get("retain", False),
        "received_at": _iso(doc["received_at"]),
        "kind": kind,
        "body": body,
        "hidden": hidden,
        "size": doc.get("size"),
        "truncated": doc.get("truncated", False),
        "raw_reason": doc.get("raw_reason"),
        "points": message_points(doc),  # {series name: value}, for the charts
    }


def device_summary(doc):
    """What the device list needs to update one row."""
    return {
        "device_id": doc["device_id"],
        "name": doc.get("name") or None,
        "online": bool(doc.get("online")),
        "message_count": doc.get("message_count", 0),
        "last_seen_at": _iso(doc.get("last_seen_at")),
    }


def publish_messages(stored):
    """Emit a stored batch's messages to the rooms of their devices' pages."""
    per_device = defaultdict(list)
    for doc in stored:
        per_device[doc["device_id"]].append(doc)
    for device_id, docs in per_device.items():
        room = device_room(device_id)
        if may_have_listeners(room):
            socketio.emit("messages", [message_summary(doc) for doc in docs], to=room)


def state_summary(state):
    """What the pages need of a device the bridge holds (its name is not there: pages keep theirs)."""
    return {
        "device_id": state.device_id,
        "online": bool(state.online),
        "message_count": state.message_count,
        "last_seen_at": _iso(state.last_seen_at),
    }


def publish_device_states(states):
    """Emit the bridge's current counters of devices to their pages and, newest first, to the list."""
    summaries = [state_summary(state) for state in states]
    for summary in summaries:
        room = device_room(summary["device_id"])
        if may_have_listeners(room):
            socketio.emit("device", summary, to=room)
    if summaries and may_have_listeners(DEVICES_ROOM):
        summaries.sort(key=lambda s: s["last_seen_at"] or "", reverse=True)
        socketio.emit("devices", summaries[:DEVICES_EVENT_MAX], to=DEVICES_ROOM)


def may_have_listeners(room):
    """False only when this process alone serves Socket.IO and nobody is in `room`.

    Formatting a busy device's messages costs the bridge about 8 % of its CPU under load,
    so it is skipped for rooms nobody watches. With a message queue the listeners are in
    other processes, so every room may have some.
    """
    manager = getattr(socketio.server, "manager", None)
    if manager is None or isinstance(manager, PubSubManager):
        return True
    return bool(manager.rooms.get("/", {}).get(room))


def rollout_room(rollout_id):
    """The room of one rollout's page."""
    return f"rollout:{rollout_id}"


def device_firmware_room(device_id):
    """The room of the firmware updates shown on one device's page."""
    return f"device-firmware:{device_id}"


def image_room(firmware_id):
    """The room of one firmware image's page (every job that sends it)."""
    return f"image:{firmware_id}"


def job_summary(job):
    """What a page needs to show one update job (a stored UpdateJob)."""
    last = job.history[-1] if job.history else {}
    report = last.get("report") or {}
    return {
        "id": str(job.pk),
        "rollout": str(job.rollout_id),
        "firmware": str(job.firmware_id),
        "title": job.title,
        "version": job.version,
        "device_id": job.device_id,
        "wave": job.wave,
        "state": job.state,
        "attempts": job.attempts,
        "progress": job.progress,
        "error": job.error,
        "reported_version": report.get("version") if job.state == "UPDATED" else None,
        "updated_at": _iso(job.updated_at),
    }


def rollout_summary(rollout):
    """What a rollout page needs to show the rollout's own state."""
    return {
        "id": str(rollout.pk),
        "state": rollout.state,
        "current_wave": rollout.current_wave,
        "updated_at": _iso(rollout.updated_at),
    }


def publish_job(job):
    """Emit a job's new state to the pages of its rollout, its device and its image."""
    summary = job_summary(job)
    for room in (
        rollout_room(summary["rollout"]),
        device_firmware_room(job.device_id),
        image_room(summary["firmware"]),
    ):
        socketio.emit("job", summary, to=room)


def publish_rollout(rollout):
    """Emit a rollout's new state to its page."""
    socketio.emit("rollout", rollout_summary(rollout), to=rollout_room(rollout.pk))


def format_utc(value):
    """Show a datetime or ISO string as `YYYY-MM-DD HH:MM:SS.mmm` (UTC); '—' for none."""
    if not value:
        return "—"
    text = value if isinstance(value, str) else _iso(value)
    return text.replace("T", " ").removesuffix("+00:00")


def _iso(value):
    """ISO 8601 in UTC with milliseconds, or None."""
    return value.isoformat(timespec="milliseconds") if value else None
