"""live.py: rooms and who listens to them."""

from carweb.extensions import socketio
from carweb.live import DEVICES_ROOM, device_room, may_have_listeners


def test_rooms_only_have_listeners_once_a_page_joined_them(app):
    """Without a message queue the bridge knows which rooms are empty and skips their work."""
    manager = socketio.server.manager
    assert not may_have_listeners(device_room("car-7")) and not may_have_listeners(DEVICES_ROOM)
    sid = manager.connect("eio-test", "/")
    manager.enter_room(sid, "/", device_room("car-7"))
    assert may_have_listeners(device_room("car-7")) and not may_have_listeners(device_room("car-1"))
    manager.enter_room(sid, "/", DEVICES_ROOM)
    assert may_have_listeners(DEVICES_ROOM)
    manager.disconnect(sid, "/")
    assert not may_have_listeners(device_room("car-7")) and not may_have_listeners(DEVICES_ROOM)
