"""Users page, own account, and the end of sessions: cookies, remember-me and live connections."""

import re
import time

import pytest
import socketio

from carweb.models import LoginSession, User
from carweb.models.user import MAX_SESSIONS, SESSION_LIFETIME, session_is_fresh
from carweb.users import routes
from tests.conftest import PASSWORD, csrf_token, wait_until

NEW_PASSWORD = "a much better password"


def post_form(client, page, action, **fields):
    """Post `fields` to `action` with the CSRF token of `page`."""
    token = csrf_token(client.get(page).get_data(as_text=True))
    return client.post(action, data={"csrf_token": token, **fields})


def test_admin_creates_a_user_who_can_log_in(client, auth, app):
    """The form makes the account with its role; the new user logs in with the password given."""
    auth.login()
    response = post_form(
        client, "/users", "/users", email="New@Example.com", role="operator", password=NEW_PASSWORD
    )
    assert response.status_code == 302
    user = User.find_by_email("new@example.com")
    assert user.role == "operator" and user.check_password(NEW_PASSWORD)
    assert "new@example.com" in client.get("/users").get_data(as_text=True)
    other = app.test_client()
    token = csrf_token(other.get("/login").get_data(as_text=True))
    login = other.post(
        "/login", data={"email": "new@example.com", "password": NEW_PASSWORD, "csrf_token": token}
    )
    assert login.status_code == 302


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"email": "x@example.com", "role": "viewer", "password": "short"}, "at least 12 characters"),
        ({"email": "ADMIN@example.com", "role": "viewer", "password": NEW_PASSWORD}, "exists"),
        ({"email": "not an email", "role": "viewer", "password": NEW_PASSWORD}, "Not a valid email"),
        ({"email": "y@example.com", "role": "root", "password": NEW_PASSWORD}, "Not a valid choice"),
    ],
)
def test_a_refused_user_form_says_why(client, auth, fields, error):
    """400 with the reason; nothing is created."""
    auth.login()
    response = post_form(client, "/users", "/users", **fields)
    assert response.status_code == 400 and error in response.get_data(as_text=True)
    assert User.objects.count() == 1


def test_the_last_active_admin_cannot_be_demoted_or_deactivated(client, auth):
    """Somebody must be able to manage users."""
    auth.login()
    admin = User.find_by_email("admin@example.com")
    post_form(client, f"/users/{admin.pk}", f"/users/{admin.pk}", role="viewer", active="y")
    post_form(client, f"/users/{admin.pk}", f"/users/{admin.pk}", role="admin")
    admin.reload()
    assert admin.role == "admin" and admin.active


def log_in_elsewhere(app, email, password=PASSWORD, remember=False):
    """Another browser logged in as `email`; its client and its remember-me cookie value (if asked)."""
    other = app.test_client()
    token = csrf_token(other.get("/login").get_data(as_text=True))
    data = {"email": email, "password": password, "csrf_token": token}
    if remember:
        data["remember"] = "y"
    assert other.post("/login", data=data).status_code == 302
    cookie = other.get_cookie("remember_token")
    return other, cookie.value if cookie else None


def only_remember_cookie(app, value):
    """A browser holding nothing but a (stolen) remember-me cookie."""
    thief = app.test_client()
    thief.set_cookie("remember_token", value)
    return thief


def test_logout_ends_the_remember_me_cookie_too(client, auth, app):
    """A copy of the cookie works while the session lasts, and not after its logout."""
    auth.create("v@example.com", role="viewer")
    browser, remembered = log_in_elsewhere(app, "v@example.com", remember=True)
    assert only_remember_cookie(app, remembered).get("/devices").status_code == 200
    post_form(browser, "/devices", "/logout")
    assert only_remember_cookie(app, remembered).get("/devices").status_code == 302


@pytest.mark.parametrize(
    "how", ["deactivate", "reset password", "log out everywhere", "own password", "own logout"]
)
def test_each_way_of_ending_sessions_ends_every_cookie(client, auth, app, how):
    """Two browsers and a remember-me cookie of one user: all refused afterwards."""
    auth.login()
    victim = auth.create("v@example.com", role="operator")
    first, remembered = log_in_elsewhere(app, "v@example.com", remember=True)
    second, _ = log_in_elsewhere(app, "v@example.com")
    path = f"/users/{victim.pk}"
    if how == "deactivate":
        post_form(client, path, path, role="operator")
    elif how == "reset password":
        post_form(client, path, f"{path}/password", password=NEW_PASSWORD)
    elif how == "log out everywhere":
        post_form(client, path, f"{path}/logout")
    elif how == "own password":
        fields = {"current": PASSWORD, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}
        assert post_form(first, "/account", "/account", **fields).status_code == 302
    else:
        assert post_form(first, "/account", "/account/logout").location.startswith("/login")
    still_in = how == "own password"  # the browser that changed it goes on, in a new session
    assert (first.get("/devices").status_code == 200) is still_in
    assert second.get("/devices").status_code == 302
    assert only_remember_cookie(app, remembered).get("/devices").status_code == 302
    assert LoginSession.objects(user_id=victim.pk).count() == (1 if still_in else 0)


def test_own_password_change_needs_the_current_one(client, auth):
    """A wrong current password or two different new ones: 400, nothing changes."""
    auth.login()
    for fields, error in (
        ({"current": "wrong password!", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}, "is wrong"),
        ({"current": PASSWORD, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD + "x"}, "differ"),
        ({"current": PASSWORD, "password": "short", "confirm": "short"}, "at least 12 characters"),
    ):
        response = post_form(client, "/account", "/account", **fields)
        assert response.status_code == 400 and error in response.get_data(as_text=True)
    assert User.find_by_email("admin@example.com").check_password(PASSWORD)


def test_sessions_made_before_this_version_must_log_in_again(client, auth):
    """A session cookie that names only a user id (as before) is not a login."""
    auth.login()
    user = User.find_by_email("admin@example.com")
    with client.session_transaction() as session:
        session["_user_id"] = str(user.pk)
    assert client.get("/devices").status_code == 302


def test_deactivating_a_user_disconnects_their_live_pages(live_server):
    """The admin deactivates a user whose page is open: its Socket.IO connection is closed at once."""
    live_server.create_user("live-victim@example.com", role="viewer")
    victim = live_server.login_session("live-victim@example.com")
    client = live_server.socket(victim)
    assert client.call("watch_devices", timeout=5)
    admin = live_server.login_session()
    user_id = live_server.db().users.find_one({"email": "live-victim@example.com"})["_id"]
    page = admin.get(f"{live_server.url}/users/{user_id}").text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    admin.post(f"{live_server.url}/users/{user_id}", data={"csrf_token": token, "role": "viewer"})
    assert wait_until(lambda: not client.connected, timeout=5)
    assert victim.get(f"{live_server.url}/devices", allow_redirects=False).status_code == 302
    with pytest.raises(socketio.exceptions.ConnectionError):
        live_server.socket(victim)


def test_a_connection_whose_session_ended_unnoticed_is_refused_at_its_next_event(live_server):
    """A session removed without disconnecting its socket (a race, a CLI reset): the next event ends it."""
    live_server.create_user("live-race@example.com", role="viewer")
    browser = live_server.login_session("live-race@example.com")
    client = live_server.socket(browser)
    db = live_server.db()
    user = db.users.find_one({"email": "live-race@example.com"})
    db.users.update_one({"_id": user["_id"]}, {"$set": {"session_ids": []}})
    db.login_sessions.delete_many({"user_id": user["_id"]})
    received = []
    client.emit("watch_devices", callback=received.append)  # the server closes before it answers
    assert wait_until(lambda: not client.connected, timeout=5)
    assert received in ([], [{"ok": False, "error": "login required"}])


def test_a_login_lasts_thirty_days_and_a_user_keeps_at_most_twenty(client, auth, app, monkeypatch):
    """Logins pile up only to MAX_SESSIONS (the oldest end); any login ends after SESSION_LIFETIME."""
    app.config["CARWEB_LOGIN_LIMIT_ACCOUNT"] = "100 per minute"
    auth.create("many@example.com", role="viewer")
    browsers = [log_in_elsewhere(app, "many@example.com")[0] for _ in range(MAX_SESSIONS + 2)]
    user = User.find_by_email("many@example.com")
    assert LoginSession.objects(user_id=user.pk).count() == MAX_SESSIONS == len(user.session_ids)
    assert [b.get("/devices").status_code for b in browsers[:3]] == [302, 302, 200]

    later = time.time() + SESSION_LIFETIME.total_seconds() + 1
    monkeypatch.setattr(time, "time", lambda: later)
    assert browsers[-1].get("/devices").status_code == 302
    log_in_elsewhere(app, "many@example.com")  # the next login forgets the expired ones
    assert len(User.find_by_email("many@example.com").session_ids) == 1


@pytest.mark.parametrize(
    ("session_id", "fresh"),
    [
        (f"{int(time.time()):x}.abc", True),
        (f"{int(time.time() - SESSION_LIFETIME.total_seconds() - 5):x}.abc", False),
        (f"{int(time.time() + 3600):x}.abc", False),
        ("Zm9vYmFyYmF6", False),  # the random ids of earlier versions
        ("zz.abc", False),
        ("", False),
    ],
)
def test_session_ids_say_their_age(session_id, fresh):
    """A login session id starts with the time it was made; ids without one are not fresh."""
    assert session_is_fresh(session_id) is fresh


def test_guessing_the_current_password_on_the_account_page_is_limited(client, auth):
    """The password form counts against the account limit (10 per 15 minutes by default): then 429."""
    auth.login()
    wrong = {"current": "wrong password!", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}
    statuses = [post_form(client, "/account", "/account", **wrong).status_code for _ in range(11)]
    assert statuses == [400] * 10 + [429]


def test_two_admins_demoting_each_other_at_once_leave_one_admin(client, auth, monkeypatch):
    """The last-admin check and the change are two steps: when the other admin changed in between, undo."""
    auth.login()
    other = auth.create("second-admin@example.com", role="admin")

    def the_other_request_demotes_me_meanwhile(user):
        User.objects(email="admin@example.com").update(set__role="viewer")  # its check had passed too
        return False

    monkeypatch.setattr(routes, "is_last_admin", the_other_request_demotes_me_meanwhile)
    response = post_form(client, f"/users/{other.pk}", f"/users/{other.pk}", role="viewer", active="y")
    assert response.status_code == 302
    assert User.objects.get(pk=other.pk).role == "admin"
