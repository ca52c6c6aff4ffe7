"""carweb behind the shipped nginx config on a real nginx, over HTTPS with a certificate the test makes."""

import json
import queue
import shutil
import uuid

import pytest
import requests
import socketio

from carweb.devstack import run_flask, stop_processes
from tests.conftest import PASSWORD, cookie_header, csrf_token, wait_until
from tests.nginx_support import start_nginx

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="needs nginx (Debian package nginx)")


@pytest.fixture
def behind_nginx(web_server, tmp_path):
    """One carweb process (embedded bridge, one trusted proxy, secure cookies) behind nginx: nginx's ports."""
    url, _, env = web_server(
        f"nginx_{uuid.uuid4().hex[:8]}", CARWEB_PROXY_HOPS="1", CARWEB_SECURE_COOKIES="1"
    )
    run_flask(
        env,
        "create-user",
        "tls@example.com",
        "--role",
        "viewer",
        "--password-stdin",
        capture=True,
        stdin=PASSWORD + "\n",
    )
    ports = start_nginx(tmp_path / "nginx", [url.removeprefix("http://")])
    yield ports
    stop_processes([ports.process])


def test_a_user_logs_in_over_https_and_gets_live_messages_over_websocket(behind_nginx, publisher, device_id):
    """Login, a device page and a live message, all through nginx over TLS; cookies Secure, HSTS sent."""
    https = behind_nginx.url
    publisher.publish(f"{device_id}/telemetry", json.dumps({"n": 1}), qos=1).wait_for_publish(5)
    browser = requests.Session()
    browser.trust_env = False  # else REQUESTS_CA_BUNDLE would win over the test's certificate
    browser.verify = str(behind_nginx.cert)
    token = csrf_token(browser.get(f"{https}/login", timeout=10).text)
    answer = browser.post(
        f"{https}/login",
        data={"email": "tls@example.com", "password": PASSWORD, "csrf_token": token},
        headers={"Referer": f"{https}/login"},  # as a browser sends it; over HTTPS Flask-WTF checks it
        timeout=10,
    )
    assert answer.url == f"{https}/devices", answer.url  # redirected within HTTPS: carweb saw the scheme
    assert all(cookie.secure for cookie in browser.cookies)
    assert "max-age" in answer.headers["Strict-Transport-Security"]
    page = wait_until(
        lambda: (r := browser.get(f"{https}/devices/{device_id}", timeout=10)).status_code == 200 and r
    )
    assert device_id in page.text

    received = queue.Queue()
    client = socketio.Client(reconnection=False, http_session=browser)  # its certificate too
    client.on("messages", received.put)
    client.connect(
        https, headers={"Cookie": cookie_header(browser)}, transports=["websocket"], wait_timeout=10
    )
    try:
        assert client.transport() == "websocket"
        assert client.call("watch_device", {"device_id": device_id, "after": None}, timeout=10)["ok"]
        publisher.publish(f"{device_id}/telemetry", json.dumps({"n": 2}), qos=1).wait_for_publish(5)
        batch = received.get(timeout=15)
        assert [json.loads(m["body"])["n"] for m in batch] == [2]
    finally:
        client.disconnect()


def test_port_80_redirects_to_https_except_firmware_downloads(behind_nginx):
    """Pages move to HTTPS; a device without TLS still reaches its (signed) download link."""
    http = f"http://127.0.0.1:{behind_nginx.http}"
    moved = requests.get(f"{http}/devices?x=1", allow_redirects=False, timeout=10)
    assert moved.status_code == 301 and moved.headers["Location"] == "https://127.0.0.1/devices?x=1"
    download = requests.get(f"{http}/firmware/download/not-a-token", allow_redirects=False, timeout=10)
    assert download.status_code == 403  # carweb's answer to a bad token, not a redirect


def test_nginx_serves_static_files_itself(behind_nginx):
    """Scripts and the vendored Socket.IO client come from disk with nginx's cache headers."""
    for path in ("/static/js/live.js", "/static/vendor/socket.io.min.js"):
        response = requests.get(behind_nginx.url + path, verify=str(behind_nginx.cert), timeout=10)
        assert response.status_code == 200 and "public" in response.headers["Cache-Control"], path
        assert response.headers["Content-Type"].startswith(("application/javascript", "text/javascript"))


def test_uploads_up_to_the_firmware_limit_reach_carweb(behind_nginx):
    """nginx passes a body the size of a firmware image on the upload path only; carweb decides (login)."""
    image = b"x" * (40 * 1024 * 1024)
    for path, expected in (("/firmware/upload", 302), ("/devices", 413)):
        response = requests.post(
            behind_nginx.url + path,
            data=image,
            headers={"Content-Type": "application/octet-stream"},
            verify=str(behind_nginx.cert),
            allow_redirects=False,
            timeout=60,
        )
        assert response.status_code == expected, (path, response.status_code)  # 302: carweb's login redirect
