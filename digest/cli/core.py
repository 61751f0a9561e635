"""CLI commands: init, config, demo."""

from __future__ import annotations

import click

from digest.cli import AppContext, pass_app
from digest.config import describe, mask_url
from digest.db import current_revision, head_revision, upgrade


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


COMMANDS: list[click.Command] = [init, config_cmd]
