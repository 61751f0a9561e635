"""The public door end to end, as a reader takes it in headless Debian chromium: a real
`digest serve` (subprocess) mailing through SMTP to the in-process test server.

Sign up on digest's own /subscribe page, on a partner site listed in allowed_origins (the
`digest form` snippet, with and without JavaScript) and on a site that is not listed (403,
nothing stored or sent); read the confirmation email, confirm, change a section on the
preferences page, and unsubscribe with the page's button; the database is checked at each
step. Then the RFC 8058 one-click post a mailbox provider makes, and the access log.
"""

from __future__ import annotations

import email
import http.client
import re
import sqlite3
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from digest import tokens
from digest.config import Settings
from tests.conftest import CHROMIUM_ARGS
from tests.serve import digest_serve, free_port, run_digest, serve_env, static_site, wait_for
from tests.smtp_server import SMTPTestServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SECRET = "browser-test-secret-key-0123456789"
#: A person takes longer than subscribe_min_seconds (1 s here) to fill in the form.
HUMAN_PAUSE_MS = 1500


class Doors(NamedTuple):
    base_url: str
    partner_url: str
    stranger_url: str
    database: Path
    log: Path
    smtp: SMTPTestServer
    settings: Settings


@pytest.fixture
def doors(tmp_path: Path) -> Iterator[Doors]:
    """digest serve with the smtp backend, a listed partner site and an unlisted one."""
    port, partner_port, stranger_port = free_port(), free_port(), free_port()
    base_url = f"http://127.0.0.1:{port}"
    database = tmp_path / "web.db"
    with SMTPTestServer() as smtp:
        env = serve_env(
            backend="smtp", smtp_host=smtp.host, smtp_port=str(smtp.port),
            smtp_security="none", secret_key=SECRET, database_url=f"sqlite:///{database}",
            base_url=base_url, allowed_origins=f"http://127.0.0.1:{partner_port}",
            subscribe_min_seconds="1", sections="Science,Arts",
            from_email="weekly@news.example.org",
            postal_address="12 Harbour Lane, Portsmouth PO1 2AB",
        )
        snippet = run_digest(["form"], env, tmp_path)
        for name in ("partner", "stranger"):
            (tmp_path / name).mkdir()
            (tmp_path / name / "index.html").write_text(
                '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>'
                f"A {name} site</title></head><body><h1>Weekly notes from the coast</h1>"
                f"{snippet}</body></html>", encoding="utf-8",
            )
        with static_site(tmp_path / "partner", partner_port) as partner, \
                static_site(tmp_path / "stranger", stranger_port) as stranger, \
                digest_serve(tmp_path, port, env) as log:
            settings = Settings(secret_key=(SECRET,), base_url=base_url,
                                database_url=f"sqlite:///{database}")
            yield Doors(base_url, f"{partner}/index.html", f"{stranger}/index.html", database,
                        log, smtp, settings)


@pytest.fixture
def browser(chromium_path: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def row(database: Path, address: str) -> tuple[int, str, str, str, str] | None:
    """(id, email_key, status, sections JSON, consent_source) of one subscriber, if stored."""
    with sqlite3.connect(database) as conn:
        found = conn.execute(
            "SELECT id, email_key, status, sections, consent_source FROM subscribers "
            "WHERE email_key = ?", (address,),
        ).fetchone()
    return None if found is None else (found[0], found[1], found[2], found[3], found[4])


def count_subscribers(database: Path) -> int:
    with sqlite3.connect(database) as conn:
        return int(conn.execute("SELECT count(*) FROM subscribers").fetchone()[0])


def confirm_link(doors: Doors, address: str) -> str:
    """The confirm link from the confirmation email that reached the SMTP server."""
    received = wait_for(lambda: [m for m in doors.smtp.messages if address in m.rcpt_tos],
                        15, f"the confirmation email to {address}")
    assert len(received) == 1
    message = email.message_from_bytes(received[0].data, policy=default_policy)
    assert isinstance(message, EmailMessage)
    assert message["Subject"].startswith("Confirm your subscription")
    body = message.get_body(("plain",))
    assert body is not None
    link = re.search(re.escape(doors.base_url) + r"/confirm/\S+", body.get_content())
    assert link, body.get_content()
    return link.group(0)


def fill_in(page: Any, address: str) -> None:
    page.get_by_label("Email address").fill(address)
    page.get_by_label("Name (optional)").fill("Browser Reader")
    page.get_by_label("Science").check()
    page.wait_for_timeout(HUMAN_PAUSE_MS)


def sign_up(page: Any, doors: Doors, where: str, address: str) -> None:
    """Fill in and submit the form `where` ("own", "partner" or "partner-no-js")."""
    if where == "own":
        page.goto(f"{doors.base_url}/subscribe")
    else:
        page.goto(doors.partner_url)
        if where == "partner":
            # The snippet's script fetched a fresh time-trap token from digest serve (CORS).
            page.wait_for_function(
                "document.querySelector('input[name=form_token]').value.length > 20")
    fill_in(page, address)
    page.get_by_role("button", name="Subscribe").click()
    if where == "partner-no-js":
        # No token without the script: digest answers with its own form, values kept, and
        # the reader presses Subscribe once more, now a same-origin post on digest's page.
        page.get_by_text("Almost done: check your address and press Subscribe.").wait_for()
        assert page.url == f"{doors.base_url}/subscribe"
        assert page.get_by_label("Email address").input_value() == address
        assert page.get_by_label("Science").is_checked()
        page.wait_for_timeout(HUMAN_PAUSE_MS)
        page.get_by_role("button", name="Subscribe").click()
    page.wait_for_url(f"{doors.base_url}/subscribe/thanks")
    assert page.get_by_role("heading", name="Check your inbox").is_visible()


@pytest.mark.parametrize("where", ["own", "partner", "partner-no-js"])
def test_sign_up_confirm_change_sections_and_unsubscribe(
    doors: Doors, browser: Any, where: str
) -> None:
    address = f"reader.{where}@example.org"
    context = browser.new_context(java_script_enabled=where != "partner-no-js")
    page = context.new_page()
    page.set_default_timeout(15_000)

    sign_up(page, doors, where, address)
    # The row is written just after the response (the same timing for every address).
    pending = wait_for(lambda: row(doors.database, address), 15, "the pending row")
    assert pending[2:4] == ("pending", '["Science"]')
    assert pending[4].startswith("web form")

    page.goto(confirm_link(doors, address))
    assert row(doors.database, address)[2] == "pending"  # type: ignore[index]  # GET: no change
    page.get_by_role("button", name="Yes, subscribe me").click()
    page.get_by_role("heading", name="You are subscribed").wait_for()
    assert row(doors.database, address)[2] == "active"  # type: ignore[index]

    page.get_by_role("link", name="Choose your sections or change your name").click()
    page.get_by_role("heading", name="Your preferences for").wait_for()
    assert page.get_by_label("Science").is_checked()
    page.get_by_label("Science").uncheck()
    page.get_by_label("Arts").check()
    page.get_by_role("button", name="Save preferences").click()
    page.get_by_text("Your preferences are saved.").wait_for()
    assert row(doors.database, address)[2:4] == ("active", '["Arts"]')  # type: ignore[index]

    page.get_by_role("button", name="Unsubscribe").click()
    page.get_by_role("heading", name="You are unsubscribed").wait_for()
    assert row(doors.database, address)[2] == "unsubscribed"  # type: ignore[index]
    context.close()
    assert len(doors.smtp.messages) == 1  # one confirmation, nothing else


def test_a_site_not_in_allowed_origins_cannot_sign_anyone_up(
    doors: Doors, browser: Any
) -> None:
    page = browser.new_page()
    page.set_default_timeout(15_000)
    page.goto(doors.stranger_url)
    fill_in(page, "victim@example.org")
    with page.expect_response(f"{doors.base_url}/subscribe") as answer:
        page.get_by_role("button", name="Subscribe").click()
    assert answer.value.status == 403
    page.get_by_text("This form cannot be used from that website.").wait_for()
    # Nothing stored or sent, now or once the mailer thread has had its chance.
    page.wait_for_timeout(1000)
    assert count_subscribers(doors.database) == 0
    assert doors.smtp.messages == []


def test_one_click_unsubscribe_and_the_access_log(doors: Doors, browser: Any) -> None:
    address = "one.click@example.org"
    page = browser.new_page()
    page.set_default_timeout(15_000)
    sign_up(page, doors, "own", address)
    page.goto(confirm_link(doors, address))
    page.get_by_role("button", name="Yes, subscribe me").click()
    page.get_by_role("heading", name="You are subscribed").wait_for()
    confirmed = row(doors.database, address)
    assert confirmed is not None and confirmed[2] == "active"

    class Person(NamedTuple):
        id: int
        email_key: str

    url = tokens.unsubscribe_url(doors.settings, Person(confirmed[0], confirmed[1]))
    # RFC 8058 §3.1: what a mailbox provider sends for List-Unsubscribe-Post; no cookies.
    conn = http.client.HTTPConnection("127.0.0.1", int(doors.base_url.rsplit(":", 1)[1]),
                                      timeout=10)
    try:
        conn.request("POST", url.replace(doors.base_url, ""), body="List-Unsubscribe=One-Click",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        assert response.getheader("Location") is None
    finally:
        conn.close()
    assert row(doors.database, address)[2] == "unsubscribed"  # type: ignore[index]

    # The access log is JSON per request and never contains a link token. A line is written
    # once the response body is closed, which can be just after the client has read it.
    wait_for(lambda: '"path": "/u/[token]"' in doors.log.read_text(), 10, "the access log")
    log_text = doors.log.read_text()
    assert '"path": "/u/[token]"' in log_text and '"path": "/confirm/[token]"' in log_text
    assert url.rsplit("/", 1)[1] not in log_text
    link = confirm_link(doors, address)
    assert link.rsplit("/", 1)[1] not in log_text
