"""Socket.IO handlers for the device pages."""

from flask import current_app, request
from flask_login import current_user
from flask_socketio import ConnectionRefusedError

from carweb.auth import sessions
from carweb.background import bridge_state
from carweb.bridge.topics import MAX_DEVICE_ID_LENGTH
from carweb.extensions import socketio
from carweb.history import messages_after
from carweb.live import DEVICES_ROOM, device_room, device_summary, join, message_summary, state_summary
from carweb.models import Device

CATCH_UP_LIMIT = 200


@socketio.on("connect")
def connect(auth=None):
    """Browser -> server: refuse any connection without a logged-in session; the session owns it."""
    if not current_user.is_authenticated:
        raise ConnectionRefusedError("login required")
    sessions.socket_opened(request.sid)


@socketio.on("disconnect")
def disconnect(reason=None):
    """The connection is gone: its login session no longer needs to end it."""
    sessions.socket_closed(request.sid)


@socketio.on("watch_devices")
@sessions.live_login_required
def watch_devices():
    """Browser -> server: the device list page wants device updates ("devices" events)."""
    return join(DEVICES_ROOM)


@socketio.on("watch_device")
@sessions.live_login_required
def watch_device(request):
    """Browser -> server: join a device's room ("messages" events) and catch up.

    `request` is {"device_id": ..., "after": cursor or null}; the reply is {"ok": bool,
    "messages": [...], "more": bool, "device": {...}} with the messages stored after the
    cursor, oldest first, so a page that was rendered or disconnected a moment ago misses
    nothing, and the device's current counters.
    """
    request = request if isinstance(request, dict) else {}
    device_id, after = request.get("device_id"), request.get("after")
    if not isinstance(device_id, str) or not 0 < len(device_id) <= MAX_DEVICE_ID_LENGTH:
        return {"ok": False, "error": "bad device id"}
    if not join(device_room(device_id)):
        return {"ok": False, "error": "too many rooms"}
    if not after:
        return {"ok": True, "messages": [], "more": False}
    try:
        docs, more = messages_after(device_id, after, CATCH_UP_LIMIT)
    except ValueError:
        return {"ok": False, "error": "bad cursor"}
    return {
        "ok": True,
        "messages": [message_summary(doc) for doc in docs],
        "more": more,
        "device": current_counters(device_id),
    }


def current_counters(device_id):
    """A device's counters: the bridge's own when it runs in this process (its document lags)."""
    state = bridge_state(current_app, device_id)
    if state is not None:
        return state_summary(state)
    device = Device.objects(device_id=device_id).as_pymongo().first()
    return device_summary(device) if device else None
