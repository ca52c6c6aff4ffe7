"""carweb behind the shipped nginx config on a real nginx, over HTTPS with a certificate the test makes."""

import json
import os
import queue
import shutil
import uuid

import pytest
import requests

from carweb.devstack import run_flask, stop_processes
from tests.conftest import PASSWORD, csrf_token, wait_until
from tests.nginx_support import browser_login, browser_socket, start_nginx

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
    ports.env = env
    yield ports
    stop_processes([ports.process])


def test_a_user_logs_in_over_https_and_gets_live_messages_over_websocket(behind_nginx, publisher, device_id):
    """Login, a device page and a live message, all through nginx over TLS; cookies Secure, HSTS sent."""
    https = behind_nginx.url
    publisher.publish(f"{device_id}/telemetry", json.dumps({"n": 1}), qos=1).wait_for_publish(5)
    browser = browser_login(behind_nginx, "tls@example.com")
    answer = browser.get(f"{https}/devices", timeout=10)
    assert all(cookie.secure for cookie in browser.cookies)
    assert "max-age" in answer.headers["Strict-Transport-Security"]
    page = wait_until(
        lambda: (r := browser.get(f"{https}/devices/{device_id}", timeout=10)).status_code == 200 and r
    )
    assert device_id in page.text

    received = queue.Queue()
    client = browser_socket(browser, https)
    client.on("messages", received.put)
    try:
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


def test_an_image_larger_than_other_bodies_uploads_through_nginx(behind_nginx):
    """12 MB: over nginx's 8 MB for other bodies, within the firmware limit on the upload path."""
    env = behind_nginx.env
    run_flask(
        env,
        "create-user",
        "ops@example.com",
        "--role",
        "operator",
        "--password-stdin",
        capture=True,
        stdin=PASSWORD + "\n",
    )
    browser = browser_login(behind_nginx, "ops@example.com")
    token = csrf_token(browser.get(f"{behind_nginx.url}/firmware/upload", timeout=10).text)
    image = os.urandom(12 * 1024 * 1024)
    response = browser.post(
        f"{behind_nginx.url}/firmware/upload",
        data={"title": "ecu", "version": "9.0", "csrf_token": token},
        files={"file": ("ecu.bin", image, "application/octet-stream")},
        headers={"Referer": f"{behind_nginx.url}/firmware/upload"},
        allow_redirects=False,
        timeout=120,
    )
    assert response.status_code == 302 and "/firmware/" in response.headers["Location"], response.status_code
    elsewhere = browser.post(
        f"{behind_nginx.url}/devices/x/rename", data=image, allow_redirects=False, timeout=60
    )
    assert elsewhere.status_code == 413  # nginx's own limit for every other body
