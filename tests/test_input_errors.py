"""Bad input at the CLI's doors: each gets a clear error that says what to do, and writes nothing.

Settings files and values, database URLs, time zones, CSV quotes, addresses digest cannot
deliver to, and the display of what was stored.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import wcwidth
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import func, select

from digest.cli import main
from digest.config import Settings
from digest.db import Database
from digest.models import Article, Subscriber
from tests.conftest import POSTGRES_URL, reset_postgres, skip_or_fail
from tests.test_web import subscribe

# ------------------------------------------------------------------------------ settings


@pytest.mark.parametrize(("toml", "name", "kind"), [
    ('[smtp]\npassword = ["hunter2-typed-as-a-list"]\n', "smtp_password", "list"),
    ("secret_key = 31415926535897932384\n", "secret_key", "number"),
    ('webhook_secrets = [["nested-hunter2"]]\n', "webhook_secrets", "list"),
])
def test_a_mistyped_secret_is_never_echoed(runner: CliRunner, tmp_path: Path, toml: str,
                                            name: str, kind: str) -> None:
    (tmp_path / "digest.toml").write_text(toml)
    result = runner.invoke(main, ["config"])
    assert result.exit_code == 1
    assert f"{name} from digest.toml has an invalid value a {kind} (value hidden)" in (
        result.output)
    for secret in ("hunter2", "31415926"):
        assert secret not in result.output


def test_a_mistyped_plain_setting_still_shows_its_value(runner: CliRunner,
                                                        tmp_path: Path) -> None:
    (tmp_path / "digest.toml").write_text('section_cap = "four"\n')
    result = runner.invoke(main, ["config"])
    assert result.exit_code == 1
    assert "section_cap from digest.toml has an invalid value 'four': expected a whole number" \
        in result.output


def test_a_missing_settings_file_is_an_error_naming_it(runner: CliRunner,
                                                       tmp_path: Path) -> None:
    # A ./digest.toml that would otherwise be read must not be used instead.
    (tmp_path / "digest.toml").write_text('newsletter_name = "Local"\n')
    result = runner.invoke(main, ["config"], env={"DIGEST_CONFIG": "/missing.toml"})
    assert result.exit_code == 1
    assert ("DIGEST_CONFIG names the settings file /missing.toml, which does not exist; fix "
            "the path, or unset DIGEST_CONFIG to use ./digest.toml") in result.output
    flag = runner.invoke(main, ["--config", "missing.toml", "config"])
    assert flag.exit_code == 1
    assert "settings file missing.toml (--config) does not exist" in flag.output
    folder = runner.invoke(main, ["config"], env={"DIGEST_CONFIG": str(tmp_path)})
    assert folder.exit_code == 1 and "which is a folder" in folder.output


def test_a_bad_time_zone_names_the_zone(runner: CliRunner) -> None:
    result = runner.invoke(main, ["config"], env={"DIGEST_TIMEZONE": "Mars/Olympus"})
    assert result.exit_code == 1
    assert ("unknown time zone 'Mars/Olympus' (timezone): use an IANA name such as "
            "Europe/London") in result.output
    assert "No time zone found" not in result.output


def test_an_unsupported_database_is_named(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--db", "mysql://digest:pw@db.example/digest", "init"])
    assert result.exit_code == 1
    assert "digest supports only SQLite (sqlite:///subscribers.db) and PostgreSQL" in (
        result.output)
    assert "'mysql'" in result.output and "pw@" not in result.output
    assert "pip install" not in result.output


@pytest.fixture(params=["sqlite", "postgres"])
def other_db(request: pytest.FixtureRequest) -> str:
    """A database URL that is not the default ./subscribers.db."""
    if request.param == "sqlite":
        return "sqlite:///elsewhere.db"
    if not POSTGRES_URL:
        skip_or_fail("set DIGEST_TEST_POSTGRES_URL to run the PostgreSQL variant")
    reset_postgres(POSTGRES_URL)
    return POSTGRES_URL


def test_demo_with_db_saves_the_url_for_the_next_command(
    runner: CliRunner, tmp_path: Path, other_db: str
) -> None:
    result = runner.invoke(main, ["--db", other_db, "demo", "--no-send"])
    assert result.exit_code == 0, result.output
    assert "Wrote demo settings to digest.toml (with the --db database URL)" in result.output
    config = tmp_path / "digest.toml"
    assert f"database_url = {json.dumps(other_db)}" in config.read_text()
    assert config.stat().st_mode & 0o077 == 0  # it holds the signing key
    listing = runner.invoke(main, ["articles"])
    assert listing.exit_code == 0, listing.output
    assert re.search(r"\d+ articles from ", listing.output), listing.output
    assert not (tmp_path / "subscribers.db").exists()


# ------------------------------------------------------------------------------ send --to


def test_send_to_a_malformed_address_is_an_address_error(runner: CliRunner) -> None:
    result = runner.invoke(main, ["send", "--to", "not-an-email"],
                           env={"DIGEST_SECRET_KEY": "input-errors-secret-key-0123"})
    assert result.exit_code == 1
    assert "'not-an-email' is not a valid email address: An email address must have an @-sign" \
        in result.output
    assert "remove the subscriber" not in result.output


# ------------------------------------------------------------------------------ CSV quotes


UNBALANCED = 'email,name\nq0@x.example,A\nq1@x.example,"Unclosed\nq2@x.example,B\n'


def count(db_path: Path, model: type) -> int:
    database = Database(f"sqlite:///{db_path}")
    try:
        with database.read() as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)
    finally:
        database.dispose()


def test_a_subscriber_csv_with_an_unbalanced_quote_fails_and_writes_nothing(
    runner: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "people.csv").write_text(UNBALANCED)
    result = runner.invoke(main, ["subscribers", "import", "people.csv"])
    assert result.exit_code == 1, result.output
    assert ('line 3: a quoted field starts here and is never closed (an unbalanced "); fix the '
            "quotes and import again. Nothing was imported.") in result.output
    assert count(tmp_path / "subscribers.db", Subscriber) == 0
    # Closed further down, the stray quote would swallow the next row into a name.
    (tmp_path / "people.csv").write_text(
        'email,name\nq1@x.example,"Unclosed\nq2@x.example,B"\nq3@x.example,C\n')
    result = runner.invoke(main, ["subscribers", "import", "people.csv"])
    assert result.exit_code == 1
    assert "line 2: a quoted field runs on to line 3" in result.output
    assert count(tmp_path / "subscribers.db", Subscriber) == 0


def test_an_article_csv_with_an_unbalanced_quote_fails_and_writes_nothing(
    runner: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "stories.csv").write_text(
        "title,url\n"
        "First,https://news.example.org/1\n"
        '"Unclosed,https://news.example.org/2\n'
        "Third,https://news.example.org/3\n"
    )
    result = runner.invoke(main, ["import", "stories.csv"])
    assert result.exit_code == 1, result.output
    assert "line 3: a quoted field starts here and is never closed" in result.output
    assert count(tmp_path / "subscribers.db", Article) == 0


def test_a_quoted_line_break_in_an_article_summary_is_still_fine(
    runner: CliRunner, tmp_path: Path
) -> None:
    when = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    (tmp_path / "stories.csv").write_text(
        "title,url,summary,published_at\n"
        f'First,https://news.example.org/1,"Two\nlines",{when}\n'
        f"Second,https://news.example.org/2,One line,{when}\n"
    )
    result = runner.invoke(main, ["import", "stories.csv"])
    assert result.exit_code == 0, result.output
    assert count(tmp_path / "subscribers.db", Article) == 2


# ------------------------------------------------------------------------------ addresses


LONG_LOCAL = "a" * 65 + "@example.org"


@pytest.mark.parametrize(("address", "reason"), [
    ("josé@example.org", "non-ASCII characters before the @ (é)"),
    (LONG_LOCAL, "has 65 characters before the @; RFC 5321 allows at most 64"),
])
def test_undeliverable_addresses_are_refused_by_add_and_import(
    runner: CliRunner, tmp_path: Path, address: str, reason: str
) -> None:
    added = runner.invoke(main, ["subscribers", "add", address])
    assert added.exit_code == 1
    assert reason in added.output
    (tmp_path / "people.csv").write_text(f"email\n{address}\nok@example.org\n")
    imported = runner.invoke(main, ["subscribers", "import", "people.csv"])
    assert imported.exit_code == 0, imported.output
    assert "1 added" in imported.output and "1 invalid" in imported.output
    assert f"line 2: {reason}"[:7] in imported.output and reason in imported.output
    assert count(tmp_path / "subscribers.db", Subscriber) == 1
    # 64 is the limit, not 63.
    assert runner.invoke(main, ["subscribers", "add", "b" * 64 + "@example.org"]).exit_code == 0


@pytest.mark.parametrize(("address", "reason"), [
    ("josé@example.org", "non-ASCII characters before the @"),
    (LONG_LOCAL, "RFC 5321 allows at most 64"),
])
def test_undeliverable_addresses_are_refused_by_the_form(
    client: FlaskClient, web_settings: Settings, db: Database, address: str, reason: str
) -> None:
    response = subscribe(client, web_settings, address)
    assert response.status_code == 400
    assert reason in response.get_data(as_text=True)
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 0


# ------------------------------------------------------------------------------ display


def test_articles_table_stays_aligned_with_emoji_and_wide_titles(
    runner: CliRunner, tmp_path: Path
) -> None:
    when = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    titles = ["Plain title", "Harbour towns 🚢 bet on ferries", "東京の港が再開",
              "👩‍👩‍👧 Families " + "x" * 60]
    records = [{"title": t, "url": f"https://news.example.org/{i}", "published_at": when,
                "author": "Desk", "section": "World"} for i, t in enumerate(titles)]
    (tmp_path / "a.json").write_text(json.dumps(records), encoding="utf-8")
    assert runner.invoke(main, ["import", "a.json"]).exit_code == 0
    result = runner.invoke(main, ["articles"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "https://" in line]
    assert len(rows) == 4
    # The URL column starts at the same terminal column on every row.
    starts = {wcwidth.wcswidth(row[:row.index("https://")]) for row in rows}
    assert len(starts) == 1, result.output
    assert "👩‍👩‍👧 Families" in result.output  # a cut never splits the emoji sequence


def test_json_nested_100000_deep_is_an_input_error(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    result = runner.invoke(main, ["import", "deep.json"])
    assert result.exit_code == 1, result.output
    assert "deep.json: nested too deeply" in result.output
    assert count(tmp_path / "subscribers.db", Article) == 0
