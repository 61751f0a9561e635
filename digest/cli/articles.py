"""CLI commands: import and articles (thin adapters over digest.articles and the store)."""

from __future__ import annotations

import click
import wcwidth

from digest.cli import AppContext, pass_app
from digest.models import Article

TITLE_WIDTH = 48
AUTHOR_WIDTH = 20
SECTION_WIDTH = 16


@click.command("import")
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@click.option(
    "--format", "fmt", type=click.Choice(["auto", "feed", "json", "jsonl", "csv"]),
    default="auto", show_default=True,
    help="Force a format instead of telling it from the content (feed = RSS 2.0 or Atom).",
)
@click.option(
    "--timeout", type=click.FloatRange(min=0.1, max=3600), default=None,
    help="Seconds each http(s) source may take in all, from connecting to the last byte "
         "(default: import_timeout, 20).",
)
@click.option(
    "--max-size", "max_size", metavar="SIZE", default=None,
    help="Refuse a source larger than this, e.g. 5MB or 500KB (default: import_max_bytes, "
         "20MB).",
)
@click.option(
    "--lenient", is_flag=True,
    help="Import what can be read from feeds that are not well-formed XML (with a warning).",
)
@pass_app
def import_cmd(
    app: AppContext, sources: tuple[str, ...], fmt: str, timeout: float | None,
    max_size: str | None, lenient: bool,
) -> None:
    """Load articles from RSS/Atom feeds, JSON or CSV files, or http(s) URLs.

    Re-importing updates articles instead of duplicating them (matched by guid, then URL).
    All sources are imported in one transaction: if one is unreadable, nothing is stored.
    Items without a title or an absolute http(s) link are skipped and counted.

    JSON is an array of objects (or one object per line); CSV needs a header row. Both use
    the keys title, url, guid, dek, summary, body_html, author, section, image_url,
    image_alt, image_credit and published_at (ISO 8601; no offset means UTC). An item
    without a date takes its updated date, else the time of its first import.

    \b
    Examples:
      digest import feed.xml
      digest import https://news.example.org/feed.xml extra.csv
      digest import --format jsonl articles.txt
      digest import --timeout 5 --max-size 2MB https://news.example.org/feed.xml
    """
    from digest.articles import import_sources, parse_size

    settings = app.settings
    report = import_sources(
        app.db, sources, fmt=None if fmt == "auto" else fmt,
        timeout=timeout if timeout is not None else settings.import_timeout,
        max_bytes=parse_size(max_size) if max_size else settings.import_max_bytes,
        lenient=lenient,
    )
    for result in report.sources:
        for warning in result.warnings:
            click.echo(f"Warning: {warning}", err=True)
        click.echo(result.line())
    if len(report.sources) > 1:
        click.echo(report.total_line())


def _width(text: str) -> int:
    """Terminal columns text takes: an emoji or a CJK character takes two, a combining mark none."""
    return max(wcwidth.wcswidth(text), 0)


def _cell(text: str, width: int) -> str:
    """text padded or cut to width terminal columns, with an ellipsis when cut."""
    if _width(text) > width:
        kept: list[str] = []
        used = 0
        # Cut between whole graphemes, so that an emoji sequence is never split.
        for grapheme in wcwidth.iter_graphemes(text):
            used += _width(grapheme)
            if used > width - 1:
                break
            kept.append(grapheme)
        text = "".join(kept) + "…"
    return text + " " * (width - _width(text))


@click.command("articles")
@click.option("--week", metavar="YYYY-Www", help="ISO week in the configured time zone.")
@click.option("--since", metavar="DATE", help="Window start (date or ISO date-time).")
@click.option("--until", metavar="DATE", help="Window end, exclusive.")
@click.option("--section", metavar="NAME", help="Only this section (any letter case).")
@pass_app
def articles_cmd(
    app: AppContext, week: str | None, since: str | None, until: str | None,
    section: str | None,
) -> None:
    """List stored articles in a window, newest first.

    Without --week or --since, the window is the next issue's (see `digest preview`): a
    draft's, or from the end of the last sent issue (or 7 days back) to now. Dates show in
    the configured time zone.

    \b
    Examples:
      digest articles --week 2025-W47
      digest articles --since 2025-11-17 --until 2025-11-24 --section Europe
    """
    from digest.issues import upcoming, window_for
    from digest.store.issues import articles_in_window

    tz = app.settings.tz
    with app.db.read() as session:
        if week or since or until:
            window = window_for(session, app.settings, week=week, since=since, until=until)
        else:
            # The next issue's window; after a send for the current week, the sent one's.
            chosen = upcoming(session, app.settings)
            window = chosen.window
            if chosen.note:
                click.echo(chosen.note, err=True)
        rows: list[Article] = articles_in_window(
            session, window.start, window.end, include_sent=True, section=section
        )
    span = (
        f"{window.start.astimezone(tz):%Y-%m-%d %H:%M} to "
        f"{window.end.astimezone(tz):%Y-%m-%d %H:%M} ({app.settings.timezone})"
    )
    where = f" in section {section!r}" if section else ""
    if not rows:
        click.echo(f"No articles{where} from {span}.")
        return
    click.echo(
        f"{'Published':<16}  {_cell('Section', SECTION_WIDTH)}  {_cell('Title', TITLE_WIDTH)}"
        f"  {_cell('Author', AUTHOR_WIDTH)}  URL"
    )
    for article in rows:
        click.echo(
            f"{article.published_at.astimezone(tz):%Y-%m-%d %H:%M}  "
            f"{_cell(article.section or '-', SECTION_WIDTH)}  "
            f"{_cell(article.title, TITLE_WIDTH)}  "
            f"{_cell(article.author or '-', AUTHOR_WIDTH)}  {article.url}"
        )
    noun = "article" if len(rows) == 1 else "articles"
    click.echo(f"{len(rows)} {noun}{where} from {span}.")


COMMANDS: list[click.Command] = [import_cmd, articles_cmd]
