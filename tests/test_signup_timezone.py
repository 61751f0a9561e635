"""A reader's time zone comes from their browser: the subscribe page and the `digest form`
snippet fill a hidden field from Intl, and the server keeps only real IANA zone names."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from digest.cli import main
from digest.config import Settings
from digest.db import Database
from digest.web import TIMEZONE_SCRIPT
from tests.serve import wait_for
from tests.test_web import subscribe, subscriber
from tests.test_web_browser import HUMAN_PAUSE_MS, Doors, browser, doors

__all__ = ["browser", "doors"]  # fixtures shared with test_web_browser


def zone_of(database: Path, address: str) -> str | None:
    with sqlite3.connect(database) as conn:
        found = conn.execute("SELECT timezone FROM subscribers WHERE email_key = ?",
                             (address,)).fetchone()
    return None if found is None else str(found[0])


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("where", ["own", "partner"])
def test_the_browser_time_zone_reaches_the_subscriber_row(
    doors: Doors, browser: Any, where: str
) -> None:
    address = f"reader.{where}@example.org"
    context = browser.new_context(timezone_id="Pacific/Auckland")
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    if where == "own":
        page.goto(f"{doors.base_url}/subscribe")
    else:
        page.goto(doors.partner_url)
        page.wait_for_function(
            "document.querySelector('input[name=form_token]').value.length > 20")
    # digest's own page runs the script only because its CSP names the script's hash.
    assert page.locator("input[name=timezone]").input_value() == "Pacific/Auckland"
    assert not [e for e in errors if "Content Security Policy" in e], errors
    page.get_by_label("Email address").fill(address)
    page.wait_for_timeout(HUMAN_PAUSE_MS)
    page.get_by_role("button", name="Subscribe").click()
    page.wait_for_url(f"{doors.base_url}/subscribe/thanks")
    context.close()
    zone = wait_for(lambda: zone_of(doors.database, address), 15, "the pending row")
    assert zone == "Pacific/Auckland"


def test_a_made_up_zone_is_dropped_and_the_sign_up_still_works(
    client: FlaskClient, db: Database, web_settings: Settings
) -> None:
    for n, (zone, stored) in enumerate((("Mars/Olympus_Mons", ""), ("../../etc/passwd", ""),
                                        ("x" * 300, ""), ("Europe/London", "Europe/London"))):
        address = f"reader{n}@example.org"
        response = subscribe(client, web_settings, address, timezone=zone)
        assert response.status_code in (200, 303), response.data
        person = subscriber(db, address)
        assert person is not None and person.status == "pending"
        assert person.timezone == stored


def test_the_subscribe_page_allows_only_the_time_zone_script(client: FlaskClient) -> None:
    import base64
    import hashlib

    page = client.get("/subscribe")
    policy = page.headers["Content-Security-Policy"]
    digest = base64.b64encode(hashlib.sha256(TIMEZONE_SCRIPT.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}';" in policy
    assert f"<script>{TIMEZONE_SCRIPT}</script>".encode() in page.data
    assert "script-src" not in client.get("/archive").headers["Content-Security-Policy"]


def test_digest_form_carries_the_time_zone_field(runner: CliRunner) -> None:
    result = runner.invoke(main, ["form"], env={"DIGEST_SECRET_KEY": "k" * 32})
    assert result.exit_code == 0, result.output
    assert '<input type="hidden" name="timezone" value="">' in result.output
    assert "Intl.DateTimeFormat().resolvedOptions().timeZone" in result.output
