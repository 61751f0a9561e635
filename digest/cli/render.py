"""CLI commands: preview and check (see an issue before anything is sent)."""

from __future__ import annotations

import sys
import tempfile
import webbrowser
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from digest.cli import AppContext, pass_app
from digest.errors import InputError

F = TypeVar("F", bound=Callable[..., Any])


def window_options(func: F) -> F:
    """--week / --since / --until / --include-sent, shared by preview, check and send."""
    for option in reversed([
        click.option("--week", metavar="YYYY-Www", help="ISO week in the configured time zone."),
        click.option("--since", metavar="DATE", help="Window start (date or ISO date-time)."),
        click.option("--until", metavar="DATE", help="Window end, exclusive."),
        click.option("--include-sent", is_flag=True,
                     help="Also select articles that already went out in a sent issue."),
    ]):
        func = option(func)
    return func


def issue_text_options(func: F) -> F:
    """--intro / --subject / --preheader, per-issue overrides."""
    for option in reversed([
        click.option("--intro", "intro_file", type=click.Path(exists=True, dir_okay=False,
                     path_type=Path), help="Editor's note, Markdown or plain text."),
        click.option("--subject", default="", help="Subject line for this issue."),
        click.option("--preheader", default="", help="Inbox preview text for this issue."),
    ]):
        func = option(func)
    return func


def read_intro(path: Path | None) -> str:
    """The editor's note file's text, or empty."""
    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text") from None


@click.command()
@window_options
@issue_text_options
@click.option("--format", "fmt", type=click.Choice(["html", "text", "mjml", "eml"]),
              default="html", show_default=True, help="What to output.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file instead of stdout.")
@click.option("--open", "open_browser", is_flag=True, help="Open the HTML in a browser.")
@click.option("--as", "as_email", metavar="EMAIL",
              help="Personalise for this subscriber (default: a sample reader).")
@click.option("--serve", is_flag=True,
              help="Serve a live preview on 127.0.0.1 that reloads on changes.")
@click.option("--port", type=click.IntRange(0, 65535), default=8025, show_default=True,
              help="Port for --serve.")
@pass_app
def preview(app: AppContext, week: str | None, since: str | None, until: str | None,
            include_sent: bool, intro_file: Path | None, subject: str, preheader: str,
            fmt: str, out: Path | None, open_browser: bool, as_email: str | None,
            serve: bool, port: int) -> None:
    """Show an issue exactly as readers will get it, before anything is sent.

    html is the compiled HTML as sent; text the plain-text part; mjml the intermediate
    MJML source (check it with the official MJML validator); eml the full MIME message.
    A summary (articles per section, size, clip margin, warnings) goes to stderr.

    Without --week/--since/--until it shows what `digest send` would send now: a draft if
    there is one, else the articles since the last issue; when nothing newer has come in,
    the last sent issue, with a note saying so.

    \b
    Examples:
      digest preview --open                     # this week's issue in a browser
      digest preview --week 2025-W47 --format text
      digest preview --format eml --as reader@example.com --out issue.eml
      digest preview --serve                    # live preview, reloads on edits
    """
    from digest.preview import LivePreview, build_preview, summary_lines

    def build() -> Any:
        return build_preview(
            app.db, app.settings, week=week, since=since, until=until,
            include_sent=include_sent, intro=read_intro(intro_file), subject=subject,
            preheader=preheader, as_email=as_email,
        )

    if serve:
        build()  # fail now, with a clear error, rather than inside the server
        live = LivePreview(app.db, app.settings, build, port=port)
        click.echo(f"Live preview at {live.url} (Ctrl-C to stop)", err=True)
        if open_browser:
            webbrowser.open(live.url)
        try:
            live.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            live.shutdown()
        return

    result = build()
    data = result.output(fmt, app.settings)
    for line in summary_lines(result, app.settings):
        click.echo(line, err=True)
    if out is not None:
        out.write_bytes(data)
        click.echo(f"Wrote {fmt} preview to {out}", err=True)
        if open_browser:
            webbrowser.open(out.resolve().as_uri())
    elif open_browser:
        suffix = {"html": ".html", "text": ".txt", "mjml": ".mjml", "eml": ".eml"}[fmt]
        with tempfile.NamedTemporaryFile("wb", suffix=suffix, delete=False) as handle:
            handle.write(data)
        click.echo(f"Opening {handle.name}", err=True)
        webbrowser.open(Path(handle.name).as_uri())
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


@click.command()
@window_options
@issue_text_options
@click.option("--ignore-check", "force", is_flag=True,
              help="Accept the reputation errors (http unsubscribe, misaligned DKIM), "
                   "as digest send --ignore-check does.")
@click.option("--fetch-images", is_flag=True,
              help="Also request every image URL once and warn about those that do not load.")
@click.option("--image-timeout", type=click.FloatRange(0.1, 60), default=5.0,
              show_default=True, help="Seconds each image may take to answer.")
@pass_app
def check(app: AppContext, week: str | None, since: str | None, until: str | None,
          include_sent: bool, intro_file: Path | None, subject: str, preheader: str,
          force: bool, fetch_images: bool, image_timeout: float) -> None:
    """Check an issue for what would go wrong in inboxes, before it is sent.

    Reports HTML size and the margin to Gmail's clip limit, head CSS size, images without
    alt text, non-HTTPS or relative links, a missing unsubscribe link or postal address,
    empty sections and an empty issue. It also guards the sender's reputation: a
    List-Unsubscribe link that is not https, or a DKIM domain not aligned with From, is an
    error unless --ignore-check is given; no DKIM at all is a warning. Text colours below WCAG AA
    contrast are an error. --fetch-images requests every photo once (a short timeout) and
    warns about those that do not load; nothing is fetched without it. Exits 1 on an
    error, 0 with warnings only. `digest send` runs the same check as a gate. Without
    --week/--since/--until it checks the issue `digest preview` shows: a draft, the next
    articles, or the last sent issue.

    \b
    Examples:
      digest check
      digest check --week 2025-W47
      digest check --ignore-check           # accept http unsubscribe while testing
      digest check --fetch-images           # also warn about photos that do not load
    """
    from digest.checks import check_issue
    from digest.preview import build_preview

    result = build_preview(
        app.db, app.settings, week=week, since=since, until=until,
        include_sent=include_sent, intro=read_intro(intro_file), subject=subject,
        preheader=preheader,
    )
    report = check_issue(result.compiled, result.content, app.settings)
    if fetch_images:
        from digest.checks import image_urls
        from digest.images import unreachable_images

        urls = image_urls(result.compiled, app.settings)
        problems = unreachable_images(urls, timeout=image_timeout)
        report.warnings.extend(problem.sentence() for problem in problems)
        report.notes.append(
            f"Fetched {len(urls)} image(s): {len(urls) - len(problems)} load, "
            f"{len(problems)} do not."
        )
    if result.note:
        click.echo(result.note)
    click.echo(f"Issue {result.content.number} ({result.content.label}): "
               f"{result.content.article_count} articles, subject {result.compiled.subject!r}")
    for line in report.lines():
        click.echo(line)
    blocking = len(report.errors) + (0 if force else len(report.overridable))
    if blocking:
        raise click.ClickException(
            f"{blocking} error(s): fix them before sending (see above)"
        )
    click.echo("OK: ready to send" + (f" ({len(report.warnings)} warning(s))"
                                     if report.warnings else ""))


COMMANDS: list[click.Command] = [preview, check]
