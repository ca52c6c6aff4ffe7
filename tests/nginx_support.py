"""The shipped nginx config on a real nginx in front of test servers, and certificates made by the test."""

import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import requests
import socketio

from carweb.config import ROOT
from carweb.devstack import free_port, stop_processes, wait_for_port
from tests.conftest import PASSWORD, cookie_header, csrf_token, wait_until

SITE = Path(ROOT) / "nginx" / "carweb.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def make_certificate(workdir):
    """A self-signed certificate for 127.0.0.1 and localhost: (certificate path, key path)."""
    cert, key = workdir / "carweb.crt", workdir / "carweb.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def site_config(upstreams, http_port, https_port, cert, key, firmware_mb=64):
    """nginx/carweb.conf rendered as the nginx image does, with its upstream, ports, certificate and static directory made local."""
    text = SITE.read_text()
    replacements = {
        "${CARWEB_MAX_FIRMWARE_MB}": str(firmware_mb),
        "    server web:8000 max_fails=0;\n": "".join(
            f"    server {address} max_fails=0;\n" for address in upstreams
        ),
        "    listen 80;\n": f"    listen 127.0.0.1:{http_port};\n",
        "    listen 443 ssl;\n": f"    listen 127.0.0.1:{https_port} ssl;\n",
        "/etc/nginx/certs/carweb.crt;": f"{cert};",
        "/etc/nginx/certs/carweb.key;": f"{key};",
        "alias /srv/carweb/static/;": f"alias {ROOT}/static/;",
    }
    for old, new in replacements.items():
        assert old in text, f"nginx/carweb.conf no longer has {old.strip()!r}"
        text = text.replace(old, new)
    return text


def main_config(workdir, site):
    """An nginx.conf that runs in the foreground with everything under `workdir`, including `site`."""
    temp = "".join(
        f"    {kind}_temp_path {workdir / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = (
        "user root;\n" if os.geteuid() == 0 else ""
    )  # as root, workers would drop to a user that cannot read here
    return (
        f"{user}daemon off;\npid {workdir / 'nginx.pid'};\nerror_log {workdir / 'error.log'} warn;\n"
        "worker_processes 1;\nevents { worker_connections 1024; }\n"
        f"http {{\n    include /etc/nginx/mime.types;\n    access_log off;\n{temp}    include {site};\n}}\n"
    )


def start_nginx(workdir, upstreams):
    """nginx with the shipped site config in front of `upstreams` (host:port); its ports and process."""
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key = make_certificate(workdir)
    ports = SimpleNamespace(http=free_port(), https=free_port(), cert=cert)
    site = workdir / "carweb.conf"
    site.write_text(site_config(upstreams, ports.http, ports.https, cert, key))
    (workdir / "nginx.conf").write_text(main_config(workdir, site))
    log = open(workdir / "nginx.out", "wb")  # noqa: SIM115 - the child keeps its own copy
    process = subprocess.Popen(
        [NGINX, "-p", f"{workdir}/", "-c", str(workdir / "nginx.conf")], stdout=log, stderr=log
    )
    log.close()
    try:
        wait_for_port(ports.https, process)
        wait_for_port(ports.http, process)
    except Exception:
        stop_processes([process])
        raise
    ports.process = process
    ports.url = f"https://127.0.0.1:{ports.https}"
    return ports


def reload_nginx(ports, workdir, upstreams):
    """Point the running nginx at other upstreams (`nginx -s reload`, as an operator does)."""
    site = workdir / "carweb.conf"
    site.write_text(site_config(upstreams, ports.http, ports.https, ports.cert, workdir / "carweb.key"))
    subprocess.run(
        [NGINX, "-p", f"{workdir}/", "-c", str(workdir / "nginx.conf"), "-s", "reload"], check=True
    )


def browser_socket(browser, url):
    """A Socket.IO connection as a browser opens it through nginx: polling first, then upgraded to WebSocket.

    (python-socketio's WebSocket-only connect over TLS sometimes never sees the server's
    answer to CONNECT, a client-side quirk, 2 tries in 12; browsers connect this way.)
    """
    client = socketio.Client(reconnection=False, http_session=browser)  # its certificate and cookies
    client.connect(url, headers={"Cookie": cookie_header(browser)}, wait_timeout=10)
    wait_until(lambda: client.transport() == "websocket", timeout=10)
    return client


def browser_login(nginx, email, password=PASSWORD):
    """A browser session logged in through nginx over HTTPS (trusting the test's certificate)."""
    browser = requests.Session()
    browser.trust_env = False  # else REQUESTS_CA_BUNDLE would win over the test's certificate
    browser.verify = str(nginx.cert)
    token = csrf_token(browser.get(f"{nginx.url}/login", timeout=10).text)
    answer = browser.post(
        f"{nginx.url}/login",
        data={"email": email, "password": password, "csrf_token": token},
        headers={"Referer": f"{nginx.url}/login"},  # as a browser sends it; over HTTPS Flask-WTF checks it
        timeout=10,
    )
    assert answer.url == f"{nginx.url}/devices", answer.url  # redirected within HTTPS: carweb saw the scheme
    return browser
