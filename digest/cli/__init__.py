"""The ``digest`` command line: a click group; each command module is a thin adapter."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import update_wrapper
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError

from digest import __version__
from digest.config import LoadedSettings, Settings, load_settings
from digest.db import Database, describe_error
from digest.errors import DigestError

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class AppContext:
    """What every command needs: the effective settings and a lazily opened database."""

    loaded: LoadedSettings
    _db: Database | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        """The effective settings."""
        return self.loaded.settings

    @property
    def db(self) -> Database:
        """The database, created and migrated on first use."""
        if self._db is None:
            self._db = Database(self.settings.database_url)
        return self._db

    def close(self) -> None:
        """Release database connections."""
        if self._db is not None:
            self._db.dispose()


def pass_app(func: F) -> F:
    """Decorator: call the command with the AppContext as first argument."""

    @click.pass_context
    def wrapper(ctx: click.Context, /, *args: Any, **kwargs: Any) -> Any:
        return ctx.invoke(func, ctx.find_object(AppContext), *args, **kwargs)

    return update_wrapper(wrapper, func)  # type: ignore[return-value]


class DigestGroup(click.Group):
    """A group that turns DigestError, and database errors, into ``Error: …`` and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DigestError as exc:
            raise click.ClickException(str(exc)) from exc
        except SQLAlchemyError as exc:
            # Unreachable server, missing privilege, read-only file: every write is one
            # transaction, so the data is as it was before the command.
            app = ctx.find_object(AppContext)
            url = app.settings.database_url if app is not None else ""
            raise click.ClickException(
                describe_error(exc, url) + ". Nothing was half-written."
            ) from None


@click.group(cls=DigestGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="digest")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Settings file (default: ./digest.toml if present).",
)
@click.option(
    "--db",
    "database_url",
    metavar="URL",
    help="Database URL (default: sqlite:///subscribers.db; env DIGEST_DATABASE_URL).",
)
@click.pass_context
def main(ctx: click.Context, config_file: Path | None, database_url: str | None) -> None:
    """Build a publication's weekly newsletter and send it exactly once.

    \b
    Examples:
      digest demo                      # sample articles, subscribers and this week's issue
      digest import feed.xml           # load articles from RSS/Atom, JSON or CSV
      digest preview --open            # see this week's issue in a browser
      digest send --if-due             # from cron: send the weekly issue when it is due
    """
    try:
        loaded = load_settings(config_file, overrides={"database_url": database_url})
    except DigestError as exc:
        raise click.ClickException(str(exc)) from exc
    app = AppContext(loaded)
    ctx.obj = app
    ctx.call_on_close(app.close)


def _register() -> None:
    # Imported here so that each module can import `main`/`pass_app` from this package.
    from digest.cli import articles, bounces, core, dns, issue, render, send, subscribers, web

    for module in (core, articles, subscribers, render, issue, send, bounces, web, dns):
        for command in module.COMMANDS:
            main.add_command(command)


_register()


def run() -> None:  # pragma: no cover - console script shim
    """Console-script entry point."""
    sys.exit(main())
