"""CLI commands: the ``bounces`` group (list events, fetch a mailbox, run the receiver)."""

from __future__ import annotations

import click

from digest.cli import AppContext, pass_app
from digest.models import BounceKind

KINDS = [k.value for k in BounceKind]


@click.group("bounces", invoke_without_command=True)
@click.option("--limit", "-n", type=click.IntRange(1, 10_000), default=50, show_default=True,
              help="How many events to list.")
@click.option("--kind", type=click.Choice(KINDS), help="Only events of this kind.")
@click.pass_context
def bounces_group(ctx: click.Context, limit: int, kind: str | None) -> None:
    """List recent bounce and complaint events, or read new ones.

    Reports come in two ways: `digest bounces fetch` reads a mailbox (IMAP or POP3, from
    cron), and `digest bounces receive` is a small SMTP/LMTP server the mail server hands
    the bounce address's mail to. Hard bounces and complaints act at once; soft bounces
    count (bounce_soft_limit in a row within bounce_soft_days).

    \b
    Examples:
      digest bounces                        # the 50 newest events
      digest bounces --kind complaint -n 10
      digest bounces fetch                  # from cron, e.g. every 15 minutes
      digest bounces receive --lmtp --listen 127.0.0.1:8025
    """
    if ctx.invoked_subcommand is not None:
        return
    from digest import bounces

    app = ctx.find_object(AppContext)
    assert app is not None
    rows = bounces.recent_events(app.db, limit, kind)
    if not rows:
        click.echo("No bounces or complaints yet. Read them with: digest bounces fetch")
        return
    tz = app.settings.tz
    for row in rows:
        when = f"{row.received_at.astimezone(tz):%Y-%m-%d %H:%M}"
        issue = row.issue_label or "-"
        detail = f" {row.status_code}" if row.status_code else ""
        click.echo(f"{when}  {row.kind:<9}  {row.email or '(withheld)'}  {issue}{detail}  "
                   f"→ {row.action or '-'}")
        if row.diagnostic:
            click.echo(f"    {row.diagnostic[:160]}")


@bounces_group.command("fetch")
@click.option("--limit", type=click.IntRange(1, 100_000), default=500, show_default=True,
              help="Read at most this many messages in one run.")
@click.option("--quiet", "-q", is_flag=True, help="Print only messages that were kept.")
@pass_app
def fetch_cmd(app: AppContext, limit: int, quiet: bool) -> None:
    """Read bounces and complaints from the [bounce_mailbox] over IMAP or POP3.

    Each message is stored in its own transaction and only then moved to
    bounce_mailbox_processed (or deleted; POP3 always deletes). A message that is not a
    bounce or complaint stays in the mailbox, unread, and is listed here.

    \b
    Example:
      DIGEST_BOUNCE_MAILBOX_PASSWORD=… digest bounces fetch
      */15 * * * *  cd /srv/digest && digest bounces fetch --quiet
    """
    from digest.bounces import KEPT, mailbox
    from digest.bounces.policy import Outcome

    def show(reference: str, outcome: Outcome, subject: str) -> None:
        if outcome.result == KEPT:
            click.echo(f"message {reference}: kept, not a bounce or complaint "
                       f"(Subject: {subject or '-'})")
        elif not quiet:
            click.echo(f"message {reference}: {outcome.line}")

    report = mailbox.fetch(app.db, app.settings, limit=limit, on_message=show)
    if not quiet or report.kept:
        click.echo(f"{len(report.processed)} processed, {len(report.kept)} kept in "
                   f"{report.where}.")


@bounces_group.command("receive")
@click.option("--listen", default="127.0.0.1:8025", show_default=True, metavar="HOST:PORT",
              help="Address to listen on (port 0 picks a free one).")
@click.option("--lmtp", is_flag=True, help="Speak LMTP (RFC 2033) instead of SMTP.")
@click.option("--socket", "socket_path", metavar="PATH",
              help="Listen on a Unix socket instead (e.g. for Postfix lmtp:unix:…).")
@pass_app
def receive_cmd(app: AppContext, listen: str, lmtp: bool, socket_path: str | None) -> None:
    """Receive bounces and complaints over SMTP or LMTP until stopped (SIGTERM).

    Accepts mail for bounce_address and its VERP forms only. A report is answered 250
    after it is stored, 451 (try later) if it cannot be; a message that is not a report is
    written to bounce_keep_dir and answered 250.

    \b
    Examples:
      digest bounces receive --lmtp --listen 127.0.0.1:8025
      digest bounces receive --lmtp --socket /run/digest/bounces.sock
    """
    from digest.bounces import receiver

    host, _, port_text = listen.rpartition(":")
    if not host or not port_text.isdigit() or int(port_text) > 65535:
        raise click.BadParameter("use HOST:PORT, e.g. 127.0.0.1:8025", param_hint="--listen")
    receiver.serve(app.db, app.settings, host=host.strip("[]"), port=int(port_text), lmtp=lmtp,
                   socket_path=socket_path, report=lambda line: click.echo(line))


COMMANDS = [bounces_group]
