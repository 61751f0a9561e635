"""`digest preview`, `digest check`, `digest demo` and the live preview server."""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
import urllib.request
from datetime import UTC, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from digest.cli import main
from digest.config import Settings
from digest.db import Database
from digest.issues import parse_week
from digest.models import Article
from digest.preview import LivePreview, build_preview

WEEK = "2025-W47"


def seed(db_url: str, count: int = 5) -> None:
    """Articles in 2025-W47 across two sections."""
    db = Database(db_url)
    start = parse_week(WEEK, UTC).start
    with db.write() as session:
        for i in range(count):
            session.add(Article(
                url=f"https://news.example.org/story-{i}", title=f"Headline number {i}",
                section="Europe" if i % 2 else "Asia-Pacific", author=f"Writer {i}",
                summary=f"Summary of story {i}.", image_url=f"https://img.example.org/{i}.jpg",
                image_alt=f"Picture {i}", image_credit=f"Agency {i}",
                published_at=start + timedelta(hours=10 + i),
            ))
    db.dispose()


class Headlines(HTMLParser):
    """Collects the text of every h-like headline link (an <a> around article titles)."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self._in_a = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_a = self._in_a or tag == "a"

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._in_a = False

    def handle_data(self, data: str) -> None:
        if self._in_a and data.strip():
            self.texts.append(data.strip())


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    url = f"sqlite:///{tmp_path / 'subscribers.db'}"
    seed(url)
    return {
        "DIGEST_DATABASE_URL": url,
        "DIGEST_SECRET_KEY": "preview-test-key",
        "DIGEST_POSTAL_ADDRESS": "1 Example Street, Springfield",
        "DIGEST_BASE_URL": "https://news.example.org",
        "DIGEST_FROM_EMAIL": "weekly@news.example.org",
    }


def test_preview_html_goes_to_stdout_with_summary_on_stderr(
    runner: CliRunner, env: dict[str, str]
) -> None:
    result = runner.invoke(main, ["preview", "--week", WEEK], env=env)
    assert result.exit_code == 0, result.output
    parser = Headlines()
    parser.feed(result.stdout)
    for i in range(5):
        assert f"Headline number {i}" in parser.texts
    assert "Europe: 2" in result.stderr and "Asia-Pacific: 3" in result.stderr
    assert "below Gmail's clip limit" in result.stderr
    assert result.stdout.lstrip().lower().startswith("<!doctype html")


def test_preview_summary_carries_the_checks_warnings(
    runner: CliRunner, env: dict[str, str]
) -> None:
    """An editor sees what `digest check` would say without running it separately."""
    plain_http = {**env, "DIGEST_BASE_URL": "http://news.example.org"}
    result = runner.invoke(main, ["preview", "--week", WEEK, "--format", "text"], env=plain_http)
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "http://" in result.stderr
    assert "warning:" not in result.stdout


def test_preview_text_mjml_and_eml_formats(
    runner: CliRunner, env: dict[str, str], tmp_path: Path
) -> None:
    text = runner.invoke(main, ["preview", "--week", WEEK, "--format", "text"], env=env)
    assert text.exit_code == 0 and "https://news.example.org/story-3" in text.stdout
    mjml = runner.invoke(main, ["preview", "--week", WEEK, "--format", "mjml"], env=env)
    assert mjml.exit_code == 0 and mjml.stdout.lstrip().startswith("<mjml")
    out = tmp_path / "issue.eml"
    eml = runner.invoke(
        main, ["preview", "--week", WEEK, "--format", "eml", "--out", str(out)], env=env
    )
    assert eml.exit_code == 0, eml.output
    message = email.message_from_bytes(out.read_bytes(), policy=email.policy.default)
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "reader@example.com" in message["To"]


def test_preview_as_subscriber_uses_their_sections_and_links(
    runner: CliRunner, env: dict[str, str]
) -> None:
    added = runner.invoke(
        main, ["subscribers", "add", "Asia.Reader@Example.com", "--name", "Asia Reader",
               "--section", "Asia-Pacific"], env=env,
    )
    assert added.exit_code == 0, added.output
    result = runner.invoke(
        main, ["preview", "--week", WEEK, "--format", "text", "--as", "asia.reader@example.com"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "Headline number 0" in result.stdout  # Asia-Pacific
    assert "Headline number 1" not in result.stdout  # Europe
    assert "https://news.example.org/u/" in result.stdout
    unknown = runner.invoke(main, ["preview", "--week", WEEK, "--as", "nobody@example.com"],
                            env=env)
    assert unknown.exit_code == 1
    assert "nobody@example.com" in unknown.output and "not on the list" in unknown.output


def test_empty_week_is_a_clear_error_not_an_empty_email(
    runner: CliRunner, env: dict[str, str]
) -> None:
    result = runner.invoke(main, ["preview", "--week", "2025-W10"], env=env)
    assert result.exit_code == 1
    assert "no articles for 2025-W10" in result.output
    assert "digest import" in result.output
    assert "<html" not in result.output


def test_bad_week_is_an_error_with_the_expected_format(
    runner: CliRunner, env: dict[str, str]
) -> None:
    result = runner.invoke(main, ["preview", "--week", "47"], env=env)
    assert result.exit_code == 1 and "2025-W47" in result.output


def test_check_passes_a_good_issue_and_fails_without_postal_address(
    runner: CliRunner, env: dict[str, str]
) -> None:
    good = runner.invoke(main, ["check", "--week", WEEK], env=env)
    assert good.exit_code == 0, good.output
    assert "OK: ready to send" in good.output
    no_address = {**env, "DIGEST_POSTAL_ADDRESS": ""}
    bad = runner.invoke(main, ["check", "--week", WEEK], env=no_address)
    assert bad.exit_code == 1
    assert "postal address" in bad.output.lower()
    empty = runner.invoke(main, ["check", "--week", "2025-W10"], env=env)
    assert empty.exit_code == 1 and "no articles" in empty.output


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body


def test_live_preview_reloads_after_template_or_database_change(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """The version the page polls changes when a template or an article changes."""
    overrides = tmp_path / "templates"
    overrides.mkdir()
    settings = Settings(
        database_url=env["DIGEST_DATABASE_URL"], secret_key=("preview-secret-key-16",),
        postal_address="1 Example Street", base_url="https://news.example.org",
        templates_dir=str(overrides),
    )
    db = Database(settings.database_url)
    live = LivePreview(db, settings, lambda: build_preview(db, settings, week=WEEK), port=0)
    thread = threading.Thread(target=live.serve_forever, daemon=True)
    thread.start()
    try:
        page = _get(live.url).decode()
        assert "Mobile" in page and "Desktop" in page and "Text" in page
        first = json.loads(_get(live.url + "version"))["version"]
        assert b"Headline number 4" in _get(live.url + "issue.html")
        assert b"Headline number 4" in _get(live.url + "issue.txt")

        # A publication's override of the text template takes effect on the next poll.
        (overrides / "digest.txt.j2").write_text("Overridden text part\n")
        time.sleep(0.01)
        second = json.loads(_get(live.url + "version"))["version"]
        assert second != first
        assert _get(live.url + "issue.txt").startswith(b"Overridden text part")

        with db.write() as session:
            session.add(Article(url="https://news.example.org/new", title="Brand new story",
                                section="Europe",
                                published_at=parse_week(WEEK, UTC).start + timedelta(days=1)))
        third = json.loads(_get(live.url + "version"))["version"]
        assert third != second
        assert b"Brand new story" in _get(live.url + "issue.html")
    finally:
        live.shutdown()
        thread.join(timeout=5)
        db.dispose()


def test_demo_runs_in_an_empty_folder(runner: CliRunner, tmp_path: Path) -> None:
    """The README's first command: demo settings, database, selection, preview, outbox."""
    result = runner.invoke(main, ["demo"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "digest.toml").exists()
    assert (tmp_path / "subscribers.db").exists()
    assert "This week's selection" in result.output
    previews = list((tmp_path / "preview").glob("*.html"))
    assert len(previews) == 1 and previews[0].stat().st_size > 10_000
    assert list((tmp_path / "preview").glob("*.txt"))
    emls = list((tmp_path / "outbox").glob("*.eml"))
    assert len(emls) == 5, result.output
    assert str(Path("outbox")) in result.output
    # Running it again sends nothing new and says so.
    again = runner.invoke(main, ["demo"])
    assert again.exit_code == 0, again.output
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 5


@pytest.mark.browser
def test_live_preview_toggles_mobile_width_and_text_in_a_browser(
    chromium_path: str, env: dict[str, str]
) -> None:
    """An editor can switch the live preview between desktop, mobile and the text part."""
    from playwright.sync_api import sync_playwright

    from tests.conftest import CHROMIUM_ARGS

    settings = Settings(database_url=env["DIGEST_DATABASE_URL"],
                        secret_key=("preview-secret-key-16",),
                        postal_address="1 Example Street", base_url="https://news.example.org")
    db = Database(settings.database_url)
    live = LivePreview(db, settings, lambda: build_preview(db, settings, week=WEEK), port=0)
    thread = threading.Thread(target=live.serve_forever, daemon=True)
    thread.start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            page.goto(live.url, timeout=15_000)
            frame = page.frame_locator("#frame")
            frame.get_by_text("Headline number 4", exact=True).first.wait_for(timeout=15_000)
            assert page.locator("#frame").bounding_box()["width"] == 700  # type: ignore[index]

            page.get_by_role("button", name="Mobile").click()
            frame.get_by_text("Headline number 4", exact=True).first.wait_for(timeout=15_000)
            assert page.locator("#frame").bounding_box()["width"] == 375  # type: ignore[index]
            inner = page.frame(url=lambda u: u.endswith("/issue.html"))
            assert inner is not None
            assert inner.evaluate(
                "document.documentElement.scrollWidth <= window.innerWidth"
            )

            page.get_by_role("button", name="Text").click()
            page.wait_for_function(
                "document.getElementById('frame').contentDocument.contentType === 'text/plain'",
                timeout=15_000,
            )
            browser.close()
    finally:
        live.shutdown()
        thread.join(timeout=5)
        db.dispose()
