"""Login, logout, CSRF, roles and the create-user command."""

import pytest

from carweb.models import User
from tests.conftest import PASSWORD, csrf_token


@pytest.mark.parametrize("path", ["/", "/devices", "/devices/some-car", "/metrics"])
def test_pages_without_login_redirect_to_login(client, path):
    """Every page but /login and /healthz needs a login (/metrics answers 401 instead)."""
    response = client.get(path)
    if path == "/metrics":
        assert response.status_code == 401
    else:
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/login")


def test_login_page_and_healthz_are_public(client):
    """The two public pages answer without a session."""
    assert client.get("/login").status_code == 200
    assert client.get("/healthz").status_code == 200


def test_admin_logs_in_and_lands_on_devices(client, auth):
    """Right credentials: a session and a redirect to the device list."""
    response = auth.login()
    assert response.status_code == 302 and response.headers["Location"] == "/devices"
    assert client.get("/devices").status_code == 200


def test_wrong_password_is_refused_without_saying_which_part(client, auth):
    """Wrong password or unknown email give the same message."""
    auth.create()
    for email, password in (("admin@example.com", "nope-nope"), ("who@example.com", PASSWORD)):
        token = csrf_token(client.get("/login").get_data(as_text=True))
        page = client.post("/login", data={"email": email, "password": password, "csrf_token": token})
        assert page.status_code == 200 and "Wrong email or password." in page.get_data(as_text=True)
    assert client.get("/devices").status_code == 302


def test_inactive_user_cannot_log_in(client, auth):
    """Deactivated users are refused."""
    user = auth.create()
    user.update(set__active=False)
    assert auth.login().status_code == 200


def test_post_without_csrf_token_gets_400(client, auth):
    """Every form is CSRF-protected, the login form too."""
    assert client.post("/login", data={"email": "a@b.c", "password": "x"}).status_code == 400
    auth.login()
    assert client.post("/logout").status_code == 400
    assert client.post("/devices/x/rename", data={"name": "y"}).status_code == 400


def test_logout_ends_the_session(client, auth):
    """After logging out, pages redirect to login again."""
    auth.login()
    response = client.post("/logout", data={"csrf_token": auth.token()})
    assert response.status_code == 302
    assert client.get("/devices").status_code == 302


def test_next_parameter_only_leads_to_this_site(client, auth):
    """An open redirect through ?next= is not possible."""
    auth.create()
    for target, expected in (
        ("/devices/abc", "/devices/abc"),
        ("https://evil.example/", "/devices"),
        ("//evil", "/devices"),
    ):
        client.get("/")  # fresh page, fresh token
        token = csrf_token(client.get(f"/login?next={target}").get_data(as_text=True))
        response = client.post(
            f"/login?next={target}",
            data={"email": "admin@example.com", "password": PASSWORD, "csrf_token": token},
        )
        assert response.headers["Location"] == expected
        client.post("/logout", data={"csrf_token": auth.token()})


def test_session_cookie_is_httponly_and_samesite_lax(client, auth):
    """The session cookie cannot be read by scripts nor sent cross-site."""
    response = auth.login()
    cookie = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith("session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_passwords_are_stored_as_argon2_hashes(app):
    """Never plain text, never a fast hash."""
    user = User.create_or_update("x@example.com", PASSWORD, role="viewer")
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
    assert user.check_password(PASSWORD) and not user.check_password(PASSWORD + "!")


def test_create_user_command_reads_password_from_stdin(runner):
    """`flask create-user EMAIL --role admin --password-stdin` creates or updates the user."""
    result = runner.invoke(
        args=["create-user", "Ops@Example.com", "--role", "admin", "--password-stdin"], input=PASSWORD + "\n"
    )
    assert result.exit_code == 0, result.output
    user = User.find_by_email("ops@example.com")
    assert user.role == "admin" and user.check_password(PASSWORD)
    result = runner.invoke(
        args=["create-user", "ops@example.com", "--role", "viewer", "--password-stdin"], input="short\n"
    )
    assert result.exit_code != 0 and "at least 12" in result.output


def test_create_user_command_prompts_twice_for_the_password(runner):
    """Without --password-stdin the password is asked for and confirmed."""
    result = runner.invoke(args=["create-user", "p@example.com"], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert User.find_by_email("p@example.com").role == "operator"


def test_ensure_admin_generates_a_first_admin_once(runner, monkeypatch):
    """No user and no configured admin: one admin with a random password, printed once."""
    monkeypatch.delenv("CARWEB_ADMIN_EMAIL", raising=False)
    monkeypatch.delenv("CARWEB_ADMIN_PASSWORD", raising=False)
    first = runner.invoke(args=["ensure-admin"])
    assert "created admin admin@localhost with password" in first.output
    password = first.output.split("with password ")[1].split()[0]
    assert User.find_by_email("admin@localhost").check_password(password)
    assert runner.invoke(args=["ensure-admin"]).output == ""


def test_ensure_admin_applies_the_configured_admin(runner, monkeypatch):
    """CARWEB_ADMIN_EMAIL/PASSWORD create or reset that admin at every start."""
    monkeypatch.setenv("CARWEB_ADMIN_EMAIL", "boss@example.com")
    monkeypatch.setenv("CARWEB_ADMIN_PASSWORD", PASSWORD)
    runner.invoke(args=["ensure-admin"])
    user = User.find_by_email("boss@example.com")
    assert user.role == "admin" and user.check_password(PASSWORD)
    assert User.find_by_email("admin@localhost") is None
