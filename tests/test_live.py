"""live.py: rooms and who listens to them."""

from carweb.extensions import socketio
from carweb.live import DEVICES_ROOM, anyone_watching, device_room, may_have_listeners


def test_rooms_only_have_listeners_once_a_page_joined_them(app, client, auth):
    """Without a message queue the bridge knows which rooms are empty and skips their work."""
    auth.login()
    page = socketio.test_client(app, flask_test_client=client)
    assert page.is_connected()
    assert not may_have_listeners(device_room("car-7")) and not anyone_watching({"car-1", "car-7"})
    assert page.emit("watch_device", {"device_id": "car-7"}, callback=True)["ok"] is True
    assert may_have_listeners(device_room("car-7"))
    assert anyone_watching({"car-1", "car-7"}) and not anyone_watching({"car-1"})
    assert page.emit("watch_devices", callback=True) is True
    assert may_have_listeners(DEVICES_ROOM) and anyone_watching({"car-1"})
    page.disconnect()
    assert not may_have_listeners(device_room("car-7")) and not anyone_watching({"car-1", "car-7"})
