"""CLI commands: init, config, demo."""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from digest.cli import AppContext, pass_app
from digest.config import DEFAULT_CONFIG_FILE, describe, load_settings, mask_url
from digest.db import current_revision, head_revision, upgrade
from digest.errors import ConfigError, InputError


@click.command()
@pass_app
def init(app: AppContext) -> None:
    """Create the database schema, or upgrade it to this version of digest.

    Every other command does this automatically on a fresh database.

    \b
    Example:
      digest --db postgresql+psycopg://digest@db.internal/digest init
    """
    from digest.db import Database

    database = Database(app.settings.database_url, migrate=False)
    try:
        before = current_revision(database.engine)
        changed = upgrade(database.engine)
    finally:
        database.dispose()
    where = mask_url(app.settings.database_url)
    if changed:
        click.echo(f"Database {where} upgraded from {before or 'empty'} to {head_revision()}.")
    else:
        click.echo(f"Database {where} is up to date ({head_revision()}).")


@click.command("config")
@pass_app
def config_cmd(app: AppContext) -> None:
    """Print the effective configuration and where each value came from.

    Secrets are masked. Values come from code defaults, then ./digest.toml (or --config),
    then DIGEST_* environment variables, then command-line flags.

    \b
    Example:
      DIGEST_TIMEZONE=Europe/Berlin digest config
    """
    rows = describe(app.loaded)
    width = max(len(name) for name, _, _ in rows)
    value_width = min(48, max(len(value) for _, value, _ in rows))
    for name, value, source in rows:
        click.echo(f"{name:<{width}}  {value:<{value_width}}  ({source})")


DEMO_CONFIG = """\
# Written by `digest demo`. Edit freely; `digest config` shows every setting.
newsletter_name = "The Weekly Dispatch"
from_email = "dispatch@news.example.org"
from_name = "The Weekly Dispatch"
reply_to = "letters@news.example.org"
base_url = "http://127.0.0.1:8000"
postal_address = "The Weekly Dispatch, 12 Harbour Lane, Portsmouth PO1 2AB, United Kingdom"
timezone = "Europe/London"
sections = ["Europe", "Latin America", "Asia-Pacific", "Middle East", "Military Industrial Complex"]
# A fresh signing key for this folder's links; keep it secret, rotate by prepending a new one.
secret_key = ["{secret}"]
# Nothing leaves the machine: messages are written as .eml files into ./outbox
backend = "file"
file_dir = "outbox"
"""


def _demo_dates(records: list[dict[str, Any]], start: datetime, now: datetime) -> None:
    """Spread the sample articles over this week so far, keeping their order."""
    span = max((now - start).total_seconds() - 120, 60)
    ordered = sorted(records, key=lambda r: str(r["published_at"]), reverse=True)
    for i, record in enumerate(ordered):
        moment = now - timedelta(seconds=60 + span * i / max(len(ordered), 1))
        record["published_at"] = moment.isoformat()


@click.command()
@click.option("--no-send", is_flag=True, help="Stop after the preview; send nothing.")
@pass_app
def demo(app: AppContext, no_send: bool) -> None:
    """Run the whole weekly job on sample data, in the current folder.

    Writes a digest.toml with demo settings (unless one exists), creates subscribers.db,
    imports sample articles and subscribers, shows this week's selection, writes the
    preview (HTML and text) into ./preview and sends the issue through the file backend,
    which writes one .eml per subscriber into ./outbox. Running it again is safe: articles
    and subscribers are updated, and an issue already sent is not sent twice.

    \b
    Example:
      mkdir demo && cd demo && digest demo
    """
    from digest import subscribers
    from digest.articles import import_records
    from digest.issues import select_issue, week_of
    from digest.preview import build_preview, summary_lines
    from digest.sample_data import sample_articles, sample_subscribers

    config_path = Path(DEFAULT_CONFIG_FILE)
    from_file = any(
        source not in ("default", "command line") and not source.startswith("env ")
        for source in app.loaded.sources.values()
    )
    if not from_file and not config_path.exists():
        text = DEMO_CONFIG.format(secret=secrets.token_urlsafe(32))
        cli_db = app.loaded.sources["database_url"] == "command line"
        if cli_db:
            # Saved, so that the next plain `digest …` here uses the same database.
            text += f"database_url = {json.dumps(app.settings.database_url)}\n"
        # The file holds the signing key (and maybe a database password): owner only.
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        click.echo(f"Wrote demo settings to {config_path}"
                   + (" (with the --db database URL)" if cli_db else ""))
        # Environment variables still win over the demo file.
        app.loaded = load_settings(config_path)
    settings = app.settings
    if not settings.secret_key:
        raise ConfigError(
            "the demo needs a signing key for its links: set DIGEST_SECRET_KEY, or run "
            "`digest demo` in an empty folder so it writes its own digest.toml"
        )

    now = datetime.now(UTC)
    window = week_of(now, settings.tz)
    records = sample_articles(now)
    _demo_dates(records, window.start, now)
    result = import_records(app.db, records, name="sample articles")
    click.echo(result.line())

    added = 0
    with app.db.write() as session:
        for person in sample_subscribers():
            try:
                outcome = subscribers.add(
                    session, person["email"], name=person["name"],
                    sections=person["sections"], known_sections=settings.sections,
                    source="digest demo",
                )
            except InputError as exc:  # e.g. they unsubscribed since the last demo run
                click.echo(f"Skipped sample subscriber: {exc}")
                continue
            added += outcome.created
    click.echo(f"Sample subscribers: {added} added, {len(sample_subscribers()) - added} kept.")

    with app.db.read() as session:
        content = select_issue(session, settings, window)
    click.echo(f"\nThis week's selection ({window.label}):")
    for block in content.sections:
        click.echo(f"  {block.name}")
        for article in block.articles:
            click.echo(f"    - {article.title}")
    if content.more:
        click.echo("  More stories")
        for article in content.more:
            click.echo(f"    - {article.title}")
    if content.is_empty:
        click.echo("  (nothing new: every sample article went out in an earlier issue)")
        return

    preview = build_preview(app.db, settings, week=window.label)
    folder = Path("preview")
    folder.mkdir(exist_ok=True)
    html_path = folder / f"{window.label}.html"
    text_path = folder / f"{window.label}.txt"
    html_path.write_text(preview.html, encoding="utf-8")
    text_path.write_text(preview.text, encoding="utf-8")
    click.echo("")
    for line in summary_lines(preview, settings):
        click.echo(line)
    click.echo(f"Preview written to {html_path} and {text_path}")
    if no_send:
        return
    _demo_send(app, window.label)


def _demo_send(app: AppContext, week: str) -> None:
    """Send this week's issue through the configured (file) backend."""
    from digest.issues import parse_week
    from digest.sending import send_issue

    settings = app.settings
    # The demo serves its links from http://127.0.0.1: the check's reputation errors about
    # an http unsubscribe link (the preview summary above showed them) are expected here;
    # a real publication's base_url is https. Other errors still stop the send.
    summary = send_issue(app.db, settings, parse_week(week, settings.tz), ignore_check=True)
    click.echo("")
    if not summary.created and not summary.sent_now:
        click.echo(f"Issue {summary.number} ({summary.label}) was already sent; nothing to do.")
    click.echo(summary.line)
    if settings.backend == "file":
        folder = Path(settings.file_dir)
        count = len(list(folder.glob("*.eml"))) if folder.is_dir() else 0
        click.echo(f"Messages are in {folder}{os.sep} ({count} .eml files); open one in a mail "
                   "client, or run `digest serve` to try the links in them.")


COMMANDS: list[click.Command] = [init, config_cmd, demo]
