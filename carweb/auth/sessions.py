"""Ending login sessions: the session cookie, the remember-me cookie and the live connections at once."""

from functools import wraps

from flask import request
from flask_login import current_user
from flask_socketio import disconnect

from carweb.extensions import socketio
from carweb.models import LoginSession
from carweb.models.user import end_login_sessions


def start(user):
    """A new login session for `user`, from this request's address and browser; expired and surplus ones end."""
    session = user.start_session(address=request.remote_addr, agent=request.user_agent.string)
    end(user.surplus_sessions())
    return session


def end(sessions):
    """Delete the login sessions of the query `sessions` and disconnect their Socket.IO connections.

    The cookies that carry them stop working on their next request; a connection held by
    another web process is disconnected there through the Socket.IO message queue.
    """
    ended = end_login_sessions(sessions)
    for sid in (sid for session in ended for sid in session.sockets):
        socketio.server.disconnect(sid)
    return len(ended)


def end_all(user):
    """Log `user` out everywhere; how many sessions ended."""
    return end(LoginSession.objects(user_id=user.pk))


def end_current():
    """End the session of this request (logout)."""
    return end(LoginSession.objects(pk=current_user._login_session))


def socket_opened(sid):
    """Remember a Socket.IO connection of the current login session, so ending it disconnects it."""
    LoginSession.objects(pk=current_user._login_session).update_one(push__sockets=sid)


def socket_closed(sid):
    """Forget a closed Socket.IO connection."""
    if current_user.is_authenticated:
        LoginSession.objects(pk=current_user._login_session).update_one(pull__sockets=sid)


def live_login_required(handler):
    """A Socket.IO event handler that answers only while the connection's login session lasts.

    Ending a session disconnects its connections; this closes the gap of a connection
    opened while the session was being ended: its next event finds no user and ends it.
    """

    @wraps(handler)
    def checked(*args):
        if not current_user.is_authenticated:
            disconnect()
            return {"ok": False, "error": "login required"}
        return handler(*args)

    return checked
