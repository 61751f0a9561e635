"""CLI commands: draft, and issue new/edit/show/discard (an editor's hand on one issue)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from digest.cli import AppContext, pass_app
from digest.cli.render import read_intro, window_options

EDIT_HINT = ("Change it with: digest issue edit {label} --lead ID | --drop ID | --add URL | "
             "--move ID --to N | --section-order A,B | --subject TEXT")


def _local(moment: datetime, app: AppContext) -> str:
    return f"{moment.astimezone(app.settings.tz):%a %Y-%m-%d %H:%M %Z}"


def _show(app: AppContext, view: object) -> None:
    """Print an issue's order as an editor needs it: ids, sections, lead, pins, drops."""
    from digest.drafts import IssueView
    from digest.models import IssueStatus

    assert isinstance(view, IssueView)
    content = view.content
    state = "draft, not sent yet" if view.is_draft else view.status
    click.echo(f"Issue {view.number} ({view.label}): {state}, {content.article_count} "
               "article(s)")
    click.echo(f"  window     {_local(content.window_start, app)} to "
               f"{_local(content.window_end, app)}")
    if content.issue_date is not None:
        click.echo(f"  dated      {content.issue_date.day} {content.issue_date:%B %Y}"
                   + (" (the day it is sent or scheduled)" if view.is_draft else ""))
    click.echo(f"  subject    {view.subject}" + ("" if content.subject else "  (default)"))
    click.echo(f"  preheader  {view.preheader}" + ("" if content.preheader else "  (default)"))
    intro_lines = len(content.intro.strip().splitlines())
    click.echo(f"  intro      {intro_lines} line(s)" if intro_lines else "  intro      none")
    lead = content.lead
    for block in content.sections:
        click.echo(block.name)
        for place, article in enumerate(block.articles, 1):
            _item(f"{place:>3}.", article, lead, content.pinned)
    if content.more:
        click.echo("More stories")
        for place, article in enumerate(content.more, 1):
            _item(f"{place:>3}.", article, lead, content.pinned)
    if view.dropped:
        click.echo("Dropped (left out of this issue; free for a later one)")
        for article in view.dropped:
            _item("  -", article, None, frozenset())
    for warning in view.warnings:
        click.echo(f"warning: {warning}", err=True)
    if view.status == IssueStatus.DRAFT:
        click.echo(EDIT_HINT.format(label=view.label))


def _item(mark: str, article: object, lead: object, pinned: frozenset[int]) -> None:
    from digest.issues import ArticleView

    assert isinstance(article, ArticleView)
    tags = []
    if lead is not None and article == lead:
        tags.append("lead")
    if article.id in pinned:
        tags.append("pinned")
    suffix = f"  ({', '.join(tags)})" if tags else ""
    click.echo(f"{mark} [{article.id}] {article.title}{suffix}")


@click.command("draft")
@window_options
@click.option("--now", "now_text", hidden=True, help="Testing only: pretend it is this time.")
@pass_app
def draft(app: AppContext, week: str | None, since: str | None, until: str | None,
          include_sent: bool, now_text: str | None) -> None:
    """Freeze an issue's automatic selection into a draft you can edit before it is sent.

    Without --week/--since/--until it drafts the next scheduled issue (see `digest
    schedule`). The draft has no deliveries yet: change it with `digest issue edit`, look at
    it with `digest preview` or `digest issue show`, and `digest send` (or cron's `send
    --if-due`) sends it as it stands. Articles published after the draft was made are not
    in it unless you --add them.

    \b
    Examples:
      digest draft                       # the next scheduled issue
      digest draft --week 2025-W48
      digest issue new --week 2025-W48   # the same
    """
    from digest.cli.send import _parse_now
    from digest.drafts import create_draft, draft_window

    now = _parse_now(now_text)
    with app.db.read() as session:
        window = draft_window(session, app.settings, week=week, since=since, until=until,
                              now=now)
    view = create_draft(app.db, app.settings, window, include_sent=include_sent, now=now)
    click.echo(f"Drafted issue {view.number} ({view.label}) with "
               f"{view.content.article_count} article(s); nothing is sent yet.")
    _show(app, view)


@click.group("issue")
def issue_group() -> None:
    """Shape one issue before it goes: draft it, choose the lead, add, drop and reorder.

    \b
    Examples:
      digest issue new --week 2025-W48
      digest issue edit 2025-W48 --lead https://news.example.org/ferries --drop 17
      digest issue show 2025-W48
      digest issue discard 2025-W48
    """


@issue_group.command("edit")
@click.argument("issue")
@click.option("--lead", metavar="URL|ID", help="Open the issue with this article (added if "
              "needed). Its section comes first.")
@click.option("--drop", multiple=True, metavar="URL|ID",
              help="Leave this article out (repeatable). It stays free for a later issue.")
@click.option("--add", multiple=True, metavar="URL|ID",
              help="Pin this article into its section, beyond the caps (repeatable).")
@click.option("--move", metavar="URL|ID", help="Move this article within its section ...")
@click.option("--to", "to", type=int, metavar="N", help="... to place N (1 is the top).")
@click.option("--section-order", metavar="A,B,...",
              help="Sections in this order; unnamed ones follow in their current order.")
@click.option("--subject", help='Subject line (at most 150 characters; "" restores the '
              "default).")
@click.option("--preheader", help='Inbox preview text ("" restores the default).')
@click.option("--intro", "intro_file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Editor's note from this file, Markdown or plain text "
              "(an empty file removes it).")
@click.option("--include-sent", is_flag=True,
              help="Allow --add/--lead of an article that went out in another issue.")
@pass_app
def issue_edit(app: AppContext, issue: str, lead: str | None, drop: tuple[str, ...],
               add: tuple[str, ...], move: str | None, to: int | None,
               section_order: str | None, subject: str | None, preheader: str | None,
               intro_file: Path | None, include_sent: bool) -> None:
    """Change a draft issue (label like 2025-W48, or number); all changes or none.

    Articles are named by id (shown by `digest issue show`) or by URL. Changes apply in
    this order: --add, --drop, --lead, --move, --section-order, then the words.

    \b
    Examples:
      digest issue edit 2025-W48 --lead 42
      digest issue edit 2025-W48 --drop https://news.example.org/old-news --add 57
      digest issue edit 2025-W48 --move 57 --to 1
      digest issue edit 2025-W48 --section-order "Asia-Pacific,Europe"
      digest issue edit 2025-W48 --subject "Ferries win the week" --intro note.md
    """
    from digest.drafts import Edits, edit_draft

    if (move is None) != (to is None):
        raise click.UsageError("--move ID and --to N go together")
    edits = Edits(
        add=add, drop=drop, lead=lead,
        move=(move, to) if move is not None and to is not None else None,
        section_order=tuple(section_order.split(",")) if section_order is not None else None,
        subject=subject, preheader=preheader,
        intro=read_intro(intro_file) if intro_file is not None else None,
        include_sent=include_sent,
    )
    view = edit_draft(app.db, app.settings, issue, edits)
    _show(app, view)


@issue_group.command("show")
@click.argument("issue")
@pass_app
def issue_show(app: AppContext, issue: str) -> None:
    """An issue's order (label like 2025-W48, or number): sections, lead, pins and drops.

    \b
    Example:
      digest issue show 2025-W48
    """
    from digest.drafts import show_issue

    _show(app, show_issue(app.db, app.settings, issue))


@issue_group.command("discard")
@click.argument("issue")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def issue_discard(app: AppContext, issue: str, yes: bool) -> None:
    """Delete a draft; its articles are free again for the automatic selection.

    \b
    Example:
      digest issue discard 2025-W48 --yes
    """
    from digest.drafts import discard_draft

    if not yes:
        click.confirm(f"Discard the draft {issue} and its edits?", abort=True)
    number, label = discard_draft(app.db, issue)
    click.echo(f"Discarded draft issue {number} ({label}).")


issue_group.add_command(draft, name="new")

COMMANDS: list[click.Command] = [draft, issue_group]
