"""Socket.IO handlers for the device pages."""

from flask_login import current_user
from flask_socketio import ConnectionRefusedError, join_room

from carweb.extensions import socketio
from carweb.live import DEVICES_ROOM, device_room


@socketio.on("connect")
def connect(auth=None):
    """Browser -> server: refuse any connection without a logged-in session."""
    if not current_user.is_authenticated:
        raise ConnectionRefusedError("login required")


@socketio.on("watch_devices")
def watch_devices():
    """Browser -> server: the device list page wants device updates ("devices" events)."""
    join_room(DEVICES_ROOM)
    return True


@socketio.on("watch_device")
def watch_device(device_id):
    """Browser -> server: a device page wants that device's new messages ("messages" events)."""
    if not isinstance(device_id, str) or not device_id or len(device_id) > 128:
        return False
    join_room(device_room(device_id))
    return True
