"""`digest serve` behind a real reverse proxy: Debian's nginx on loopback, started by the test.

With trusted_proxies = 1, each visitor has their own per-IP sign-up limit (issue 10: waitress
used to clear X-Forwarded-For, so every visitor counted as the proxy and 20 posts from
anyone closed the form for everyone).
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.conftest import skip_or_fail
from tests.serve import digest_serve, free_port, serve_env, wait_for

pytestmark = pytest.mark.slow

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
IP_LIMIT = 2
SECRET = "proxy-test-secret-key-0123456789"

NGINX_CONF = """
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""


@pytest.fixture
def nginx_in_front(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """digest serve (trusted_proxies = 1) behind nginx; yields nginx's port and the serve log."""
    if not Path(NGINX).exists():
        skip_or_fail("nginx is not installed: apt-get install nginx-light")
    upstream, port = free_port(), free_port()
    env = serve_env(
        secret_key=SECRET, database_url=f"sqlite:///{tmp_path / 'proxy.db'}",
        base_url=f"http://127.0.0.1:{port}", backend="memory", trusted_proxies="1",
        subscribe_ip_limit=str(IP_LIMIT), subscribe_email_limit="100",
        subscribe_min_seconds="0",
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp_path, port=port, upstream=upstream))
    with digest_serve(tmp_path, upstream, env) as log:
        with (tmp_path / "nginx.out").open("wb") as out:
            proxy = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(conf), "-e",
                                      str(tmp_path / "error.log")],
                                     stdout=out, stderr=subprocess.STDOUT)
        try:
            def up() -> bool:
                assert proxy.poll() is None, (tmp_path / "error.log").read_text()
                try:
                    return request("127.0.0.1", port, "GET", "/healthz")[0] == 200
                except OSError:
                    return False

            wait_for(up, 20, "nginx to proxy /healthz")
            yield port, log
        finally:
            proxy.terminate()
            try:
                proxy.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proxy.kill()
                proxy.wait(timeout=10)


def request(source: str, port: int, method: str, path: str, body: str = "",
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One HTTP request to 127.0.0.1:port from the loopback address source."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                      source_address=(source, 0))
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def sign_up(source: str, port: int, address: str, spoof: str = "") -> int:
    status, body = request(source, port, "GET", "/subscribe/token")
    assert status == 200
    form = urlencode({"email": address, "form_token": json.loads(body)["token"]})
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if spoof:
        headers["X-Forwarded-For"] = spoof
    return request(source, port, "POST", "/subscribe", form, headers)[0]


def test_each_client_behind_nginx_has_its_own_limit(nginx_in_front: tuple[int, Path]) -> None:
    """Two visitors (127.0.0.2 and 127.0.0.3 on loopback) reach digest through nginx."""
    port, log = nginx_in_front
    first = [sign_up("127.0.0.2", port, f"a{i}@example.org") for i in range(IP_LIMIT + 1)]
    assert first == [303] * IP_LIMIT + [429]
    # Another visitor is not blocked by the first one's posts.
    assert sign_up("127.0.0.3", port, "b0@example.org") == 303
    # A visitor cannot pick a fresh address by sending its own X-Forwarded-For: nginx appends
    # the real one, and only that last hop is trusted.
    assert sign_up("127.0.0.2", port, "a9@example.org", spoof="203.0.113.50") == 429
    # The access log shows the visitors, not the proxy.
    wait_for(lambda: log.read_text().count('"path": "/subscribe"') >= 5, 10, "the access log")
    addresses = {json.loads(line)["remote_addr"] for line in log.read_text().splitlines()
                 if line.startswith("{") and '"path": "/subscribe"' in line}
    assert addresses == {"127.0.0.2", "127.0.0.3"}


def test_trusted_proxy_address_must_be_an_ip_address() -> None:
    from digest.config import Settings
    from digest.errors import ConfigError

    with pytest.raises(ConfigError, match=r"trusted_proxy_address 'proxy\.example' must be"):
        Settings().replace(trusted_proxies=1, trusted_proxy_address="proxy.example")
    for good in ("::1", "10.0.0.5", "*"):
        assert Settings().replace(trusted_proxy_address=good).trusted_proxy_address == good
