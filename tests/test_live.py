"""live.py: rooms and who listens to them."""

from carweb.extensions import socketio
from carweb.live import device_room, may_have_listeners


def test_rooms_nobody_watches_are_known_to_be_empty(app, client, auth):
    """Without a message queue, a room only has listeners once a page joined it."""
    auth.login()
    page = socketio.test_client(app, flask_test_client=client)
    assert page.is_connected()
    assert not may_have_listeners(device_room("car-7"))
    assert page.emit("watch_device", {"device_id": "car-7"}, callback=True)["ok"] is True
    assert may_have_listeners(device_room("car-7"))
    page.disconnect()
    assert not may_have_listeners(device_room("car-7"))

