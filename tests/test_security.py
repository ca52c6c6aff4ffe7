"""Security headers, anonymous bodies, login limits and constant-work logins."""

import mongoengine
import pytest
import requests
from argon2 import PasswordHasher

from carweb import config as carweb_config
from carweb import create_app
from carweb.models import AuditEntry, User
from tests.conftest import PASSWORD, csrf_token

PAGES = ["/login", "/healthz", "/static/css/carweb.css", "/firmware/download/nope", "/devices"]


@pytest.mark.parametrize("path", PAGES)
def test_every_response_carries_the_security_headers(client, auth, path):
    """A strict policy without inline code, no framing, no sniffing, no cross-site referrer."""
    auth.login()
    response = client.get(path)
    response.close()  # a static file's response holds the file open
    policy = response.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy
    assert "object-src 'none'" in policy
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert "Strict-Transport-Security" not in response.headers  # plain HTTP


def test_error_pages_carry_them_too(client, auth):
    """A 404 and a 403 get the same headers as a page."""
    auth.login("viewer@example.com", role="viewer")
    for path, status in (("/devices/none-such", 404), ("/firmware/upload", 403)):
        response = client.get(path)
        assert (
            response.status_code == status
            and "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        )


def test_hsts_only_over_https(client):
    """Served over HTTPS, directly or behind a proxy that says so, responses add HSTS."""
    direct = client.get("/login", base_url="https://localhost")
    proxied = client.get("/login", headers={"X-Forwarded-Proto": "https"})
    for response in (direct, proxied):
        assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_an_anonymous_post_is_turned_away_unread(client):
    """A megabyte posted to a page that needs a login: the redirect, not the 413 that reading it would give."""
    body = {"name": "x" * 1_000_000}
    response = client.post("/devices/car-1/rename", data=body)
    assert response.status_code == 302 and response.location.startswith("/login")
    assert client.post("/login", data=body).status_code == 413


def failed_login(client, email, password="wrong-password-1"):
    """Post the login form with a wrong password; the response."""
    token = csrf_token(client.get("/login").get_data(as_text=True))
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token})


def test_failed_logins_are_limited_per_account(app, client, auth):
    """After the limit even the right password waits; another account is not affected."""
    app.config["CARWEB_LOGIN_LIMIT_ACCOUNT"] = "3 per minute"
    auth.create("a@example.com")
    auth.create("b@example.com")
    assert [failed_login(client, "a@example.com").status_code for _ in range(3)] == [200, 200, 200]
    refused = failed_login(client, "A@example.com ", PASSWORD)  # the same account, spelt otherwise
    assert refused.status_code == 429 and "Too many" in refused.get_data(as_text=True)
    assert "Retry-After" in refused.headers
    assert failed_login(client, "b@example.com", PASSWORD).status_code == 302


def test_login_attempts_are_limited_per_address(app, client, auth):
    """Guessing across many accounts from one address stops too; successes count as attempts."""
    app.config["CARWEB_LOGIN_LIMIT_ADDRESS"] = "4 per minute"
    auth.create("c@example.com")
    assert failed_login(client, "c@example.com", PASSWORD).status_code == 302
    client.post("/logout", data={"csrf_token": auth.token()})
    assert [failed_login(client, f"n{n}@example.com").status_code for n in range(3)] == [200] * 3
    assert failed_login(client, "c@example.com", PASSWORD).status_code == 429


def test_a_login_that_is_not_form_encoded_is_refused(client, auth):
    """JSON or multipart logins would get round the per-account count: 400, nobody logged in."""
    auth.create()
    token = csrf_token(client.get("/login").get_data(as_text=True))
    fields = {"email": "admin@example.com", "password": PASSWORD, "csrf_token": token}
    assert client.post("/login", json=fields).status_code == 400
    assert client.post("/login", data=fields, content_type="multipart/form-data").status_code == 400
    assert client.get("/devices").status_code == 302


def test_behind_a_trusted_proxy_the_client_address_is_the_forwarded_one(services, tmp_path):
    """CARWEB_PROXY_HOPS=1: audit and limits see X-Forwarded-For's client; without it, the peer."""
    for hops, expected in ((1, "203.0.113.7"), (0, "127.0.0.1")):
        name = f"proxy_{hops}_{tmp_path.name[-8:]}"
        proxied = create_app(
            carweb_config.TestConfig(MONGODB_URI=services.db_uri(name), CARWEB_PROXY_HOPS=hops)
        )
        with proxied.app_context():
            User.create_or_update("p@example.com", PASSWORD)
            browser = proxied.test_client()
            headers = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
            headers["Referer"] = "https://localhost/login"  # CSRF checks it over HTTPS
            token = csrf_token(browser.get("/login", headers=headers).get_data(as_text=True))
            data = {"email": "p@example.com", "password": PASSWORD, "csrf_token": token}
            assert browser.post("/login", data=data, headers=headers).status_code == 302
            assert AuditEntry.objects(action="login").get().address == expected
            mongoengine.connection.get_db().client.drop_database(name)


def test_login_starts_a_new_session(client, auth):
    """What the anonymous session held is gone after the login."""
    auth.create()
    with client.session_transaction() as session:
        session["planted"] = "by an attacker"
    assert auth.login().status_code == 302
    with client.session_transaction() as session:
        assert "planted" not in session and session.get("_user_id")


def test_an_unknown_account_costs_the_same_hashing_as_a_known_one(client, auth, monkeypatch):
    """Unknown, inactive and known accounts each run one password verification."""
    from carweb.models import user as user_module

    calls = []

    class CountingHasher(PasswordHasher):
        def verify(self, *args):
            calls.append(1)
            return super().verify(*args)

    monkeypatch.setattr(user_module, "_hasher", CountingHasher())
    auth.create("known@example.com")
    auth.create("gone@example.com").update(set__active=False)
    for email in ("known@example.com", "nobody@example.com", "gone@example.com"):
        calls.clear()
        assert failed_login(client, email).status_code == 200
        assert calls == [1], email


def test_the_login_limit_holds_across_two_processes_sharing_redis(web_server, redis_url):
    """Two gunicorn processes on one database and one Redis: failures on either count for both."""
    urls = [
        web_server(
            "limits_shared",
            REDIS_URL=redis_url,
            CARWEB_LOGIN_LIMIT_ACCOUNT="4 per minute",
            CARWEB_BRIDGE="off",
        )[0]
        for _ in range(2)
    ]
    statuses = []
    for attempt in range(5):
        session = requests.Session()
        url = urls[attempt % 2]
        token = csrf_token(session.get(f"{url}/login").text)
        data = {"email": "shared@example.com", "password": "wrong-password-1", "csrf_token": token}
        statuses.append(session.post(f"{url}/login", data=data, allow_redirects=False).status_code)
    assert statuses == [200, 200, 200, 200, 429]
