"""End to end in a real browser: the `digest form` snippet on another site, the emailed
confirm link, and an RFC 8058 one-click unsubscribe, against a real `digest serve`."""

from __future__ import annotations

import email
import http.client
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import default as default_policy
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from digest import tokens
from digest.config import Settings

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET = "browser-test-secret-key-0123456789"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Server(NamedTuple):
    base_url: str
    page_url: str
    database: Path
    outbox: Path
    log: Path
    settings: Settings


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """`digest serve` in a subprocess, and a page on another origin embedding `digest form`."""
    port, page_port = free_port(), free_port()
    base_url = f"http://127.0.0.1:{port}"
    page_origin = f"http://127.0.0.1:{page_port}"
    database, outbox, log = tmp_path / "web.db", tmp_path / "outbox", tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update({
        "DIGEST_BACKEND": "file",
        "DIGEST_FILE_DIR": str(outbox),
        "DIGEST_SECRET_KEY": SECRET,
        "DIGEST_DATABASE_URL": f"sqlite:///{database}",
        "DIGEST_BASE_URL": base_url,
        "DIGEST_ALLOWED_ORIGINS": page_origin,
        "DIGEST_SUBSCRIBE_MIN_SECONDS": "1",
        "DIGEST_SECTIONS": "Science,Arts",
        "DIGEST_FROM_EMAIL": "weekly@news.example.org",
        "PYTHONPATH": str(REPO_ROOT),
    })
    snippet = subprocess.run(
        [sys.executable, "-m", "digest", "form"], env=env, cwd=tmp_path, capture_output=True,
        text=True, timeout=60, check=True,
    ).stdout
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>A partner site'
        f"</title></head><body><h1>Weekly notes from the coast</h1>{snippet}</body></html>",
        encoding="utf-8",
    )
    httpd = ThreadingHTTPServer(("127.0.0.1", page_port),
                                partial(_QuietHandler, directory=str(site)))
    httpd.daemon_threads = True
    page_thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    page_thread.start()
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "digest", "serve", "--port", str(port), "--workers", "4"],
            env=env, cwd=tmp_path, stdout=log_file, stderr=subprocess.STDOUT,
        )
    try:
        def healthy() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_for(healthy, 30, "digest serve to answer /healthz")
        settings = Settings(secret_key=(SECRET,), base_url=base_url,
                            database_url=f"sqlite:///{database}")
        yield Server(base_url, f"{page_origin}/index.html", database, outbox, log, settings)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        httpd.shutdown()
        httpd.server_close()
        page_thread.join(timeout=5)


def row(database: Path, address: str) -> tuple[int, str, str, str] | None:
    with sqlite3.connect(database) as conn:
        found = conn.execute(
            "SELECT id, email_key, status, sections FROM subscribers WHERE email_key = ?",
            (address,),
        ).fetchone()
    return None if found is None else (found[0], found[1], found[2], found[3])


def test_sign_up_confirm_and_one_click_unsubscribe(server: Server, chromium_path: str) -> None:
    from playwright.sync_api import sync_playwright

    address = "browser.reader@example.org"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            page.goto(server.page_url)
            # The snippet's script fetched a fresh time-trap token from digest serve (CORS).
            page.wait_for_function(
                "document.querySelector('input[name=form_token]').value.length > 20"
            )
            page.get_by_label("Email address").fill(address)
            page.get_by_label("Name (optional)").fill("Browser Reader")
            page.get_by_label("Science").check()
            page.wait_for_timeout(1500)  # a person takes longer than subscribe_min_seconds
            page.get_by_role("button", name="Subscribe").click()
            page.wait_for_url(f"{server.base_url}/subscribe/thanks")
            assert page.get_by_role("heading", name="Check your inbox").is_visible()

            # The row is written just after the response (same timing for every address).
            pending = wait_for(lambda: row(server.database, address), 15, "the pending row")
            assert pending is not None and pending[2] == "pending"
            assert pending[3] == '["Science"]'

            files = wait_for(lambda: sorted(server.outbox.glob("*.eml")), 15,
                             "the confirmation .eml")
            assert len(files) == 1
            message = email.message_from_bytes(files[0].read_bytes(), policy=default_policy)
            assert isinstance(message, EmailMessage)
            body = message.get_body(("plain",))
            assert body is not None
            link = re.search(r"http://127\.0\.0\.1:\d+/confirm/\S+", body.get_content())
            assert link, body.get_content()

            page.goto(link.group(0))
            assert row(server.database, address)[2] == "pending"  # type: ignore[index]
            page.get_by_role("button", name="Yes, subscribe me").click()
            page.get_by_role("heading", name="You are subscribed").wait_for()
        finally:
            browser.close()

    confirmed = row(server.database, address)
    assert confirmed is not None and confirmed[2] == "active"

    class Person(NamedTuple):
        id: int
        email_key: str

    url = tokens.unsubscribe_url(server.settings, Person(confirmed[0], confirmed[1]))
    # RFC 8058 §3.1: what a mailbox provider sends for List-Unsubscribe-Post; no cookies.
    conn = http.client.HTTPConnection("127.0.0.1", int(server.base_url.rsplit(":", 1)[1]),
                                      timeout=10)
    try:
        conn.request("POST", url.replace(server.base_url, ""), body="List-Unsubscribe=One-Click",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        assert response.getheader("Location") is None
    finally:
        conn.close()
    assert row(server.database, address)[2] == "unsubscribed"  # type: ignore[index]

    # The access log is JSON per request and never contains a link token. A line is written
    # once the response body is closed, which can be just after the client has read it.
    wait_for(lambda: '"path": "/u/[token]"' in server.log.read_text(), 10, "the access log")
    log_text = server.log.read_text()
    assert '"path": "/u/[token]"' in log_text and '"path": "/confirm/[token]"' in log_text
    assert url.rsplit("/", 1)[1] not in log_text
    assert link.group(0).rsplit("/", 1)[1] not in log_text
