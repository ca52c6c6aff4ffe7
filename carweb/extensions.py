"""Flask extensions, created unbound and bound to the app in the factory."""

import mongoengine
from flask_login import LoginManager
from flask_socketio import SocketIO
from flask_wtf import CSRFProtect

socketio = SocketIO()
login_manager = LoginManager()
csrf = CSRFProtect()


def connect_db(app):
    """Connect MongoEngine's default alias to `MONGODB_URI`."""
    mongoengine.disconnect()
    mongoengine.connect(
        host=app.config["MONGODB_URI"],
        tz_aware=True,
        uuidRepresentation="standard",
        serverSelectionTimeoutMS=app.config["MONGODB_TIMEOUT_MS"],
        connect=False,
    )
