"""CLI commands: send, issues (list/show/pause/resume/cancel) and schedule."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import click

from digest.cli import AppContext, pass_app
from digest.cli.render import read_intro, window_options
from digest.errors import InputError, LockedError
from digest.models import utcnow


def _parse_now(text: str | None) -> datetime | None:
    """The hidden --now option (testing only): an ISO date-time, naive meaning UTC."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"--now {text!r} is not an ISO date-time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _frozen(moment: datetime) -> Callable[[], datetime]:
    """A clock that always says moment (the hidden --now option)."""
    return lambda: moment


class _ProgressLine:
    """One self-overwriting status line on stderr: sent, failed, rate and ETA."""

    def __init__(self) -> None:
        self._last = 0.0
        self._width = 0

    def __call__(self, event: object) -> None:
        from digest.sending import Progress

        assert isinstance(event, Progress)
        now = time.monotonic()
        if now - self._last < 0.2 and event.pending:
            return
        self._last = now
        done = event.sent + event.failed
        eta = "--:--" if event.eta is None else _clock(event.eta)
        line = (
            f"Issue {event.number} ({event.label}): {done}/{event.total} "
            f"[{_bar(done, event.total)}] {event.sent} sent, {event.failed} failed, "
            f"{event.rate:.1f} msg/s, ETA {eta}"
        )
        self._width = max(self._width, len(line))
        click.echo("\r" + line.ljust(self._width), err=True, nl=False)

    def end(self) -> None:
        """Move past the status line, if one was drawn."""
        if self._width:
            click.echo("", err=True)


def _bar(done: int, total: int, width: int = 20) -> str:
    filled = int(width * done / total) if total else width
    return "#" * filled + "-" * (width - filled)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _echo_check(report: object, *, ignore_check: bool) -> None:
    """Print the check's warnings (and errors, when ignored): always, since cron mails them."""
    from digest.checks import CheckReport

    assert isinstance(report, CheckReport)
    if ignore_check:
        for line in report.overridable:
            click.echo(f"error: {line} (sending anyway: --ignore-check)", err=True)
    for line in report.warnings + report.advisories:
        click.echo(f"warning: {line}", err=True)


@click.command()
@window_options
@click.option("--intro", "intro_file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Editor's note for a new issue, Markdown or plain text.")
@click.option("--subject", default="", help="Subject line for a new issue.")
@click.option("--preheader", default="", help="Inbox preview text for a new issue.")
@click.option("--if-due", is_flag=True,
              help="Send the scheduled weekly issue if it is due and not yet sent (for cron).")
@click.option("--force", is_flag=True,
              help="With --if-due: send or resume a week that is past its grace window (stale).")
@click.option("--ignore-check", is_flag=True,
              help="Send despite the check's reputation errors (http unsubscribe link, DKIM "
                   "not aligned). Other errors always stop a send; warnings never do.")
@click.option("--retry-failed", "retry_failed", is_flag=False, flag_value="", default=None,
              metavar="[WEEK]",
              help="Requeue the failed deliveries of an issue (default: the newest with some) "
                   "whose cause was temporary or unknown, and send them.")
@click.option("--rate", metavar="N/s", help="Rate limit shared by every sender, e.g. 50/s.")
@click.option("--dry-run", is_flag=True,
              help="Render, count and check; say whether a real send would pass the check. "
                   "Send and write nothing.")
@click.option("--to", "to", metavar="EMAIL",
              help="Send one test copy to EMAIL ([TEST] subject); record no delivery.")
@click.option("--quiet", "-q", is_flag=True,
              help="No progress or chatter; print only check warnings, the summary of a send "
                   "and errors.")
@click.option("--worker-id", metavar="NAME", help="Name this sender in leases and claims.")
@click.option("--workers", type=int, default=1, show_default=True, metavar="N",
              help="Sender processes on this machine (PostgreSQL only).")
@click.option("--now", "now_text", hidden=True, help="Testing only: pretend it is this time.")
@pass_app
def send(app: AppContext, week: str | None, since: str | None, until: str | None,
         include_sent: bool, intro_file: Path | None, subject: str, preheader: str,
         if_due: bool, force: bool, ignore_check: bool, retry_failed: str | None,
         rate: str | None, dry_run: bool, to: str | None, quiet: bool, worker_id: str | None,
         workers: int, now_text: str | None) -> None:
    """Send an issue to every active subscriber, exactly once, resuming after any crash.

    A new issue first passes `digest check`: errors stop it (the reputation errors unless
    --ignore-check); warnings are printed, also with --quiet, and do not stop it. It is then frozen
    together with one outbox row per subscriber, and delivered in small batches. Running
    digest send again for the same window resumes it: only what is not yet sent goes out.
    Temporary failures are retried with backoff on later runs; a summary lists the top
    reasons for failed and waiting deliveries. --retry-failed WEEK requeues failed
    deliveries whose cause was temporary or unknown (never 5xx rejections, nor readers who
    bounced or left).

    Without --week/--since/--until it resumes the unfinished issue, if any, or sends the
    articles since the last issue. --if-due sends the scheduled week's issue once when it
    is due (see `digest schedule`); run it from cron every few minutes.

    On PostgreSQL, --workers N runs N sender processes here, and a digest send started on
    another machine against the same database joins the same issue; they share the --rate
    limit. SQLite allows one sender: --workers above 1 is a usage error there (exit 2).

    \b
    Exit status:
      0  all sent, or nothing to do
      1  error: nothing was sent (bad setting, check errors, server refused the login, ...),
         or a worker failed
      2  usage error (wrong options, --workers on SQLite)
      3  finished, but some deliveries failed
      4  nothing failed, but some deliveries wait for a retry (run digest send again)

    \b
    Examples:
      digest send --week 2025-W47
      digest send --if-due --quiet          # from cron, every 5 minutes
      digest send --dry-run
      digest send --to me@example.com       # a test copy
      digest send --rate 50/s               # stay under a provider's limit
      digest send --workers 4 --db postgresql+psycopg://digest@db/digest
      digest send --retry-failed 2025-W47   # after fixing what made deliveries fail
    """
    from digest import sending
    from digest.issues import window_for
    from digest.ratelimit import parse_rate
    from digest.subscribers import normalise
    from digest.tokens import require_secret_key

    settings = app.settings
    now = _parse_now(now_text)
    if if_due and (week or since or until):
        raise click.UsageError("--if-due picks the scheduled week itself; drop --week/--since")
    if dry_run and to:
        raise click.UsageError("give either --dry-run or --to, not both")
    if force and not if_due:
        raise click.UsageError(
            "--force only overrides the --if-due schedule guard; to send despite check "
            "errors use --ignore-check"
        )
    if retry_failed is not None and (if_due or dry_run or to or week or since or until):
        raise click.UsageError(
            "--retry-failed names its issue itself (--retry-failed 2025-W47); drop "
            "--if-due/--dry-run/--to/--week/--since/--until"
        )
    if to:
        # The address first: a typo is an input error, not a problem with a subscriber.
        normalise(to)
    limit = parse_rate(rate) if rate else None
    if workers != 1:
        try:
            sending.check_workers(app.db, workers)
        except InputError as exc:
            raise click.UsageError(str(exc)) from None
    options = sending.IssueOptions(
        include_sent=include_sent, intro=read_intro(intro_file), subject=subject,
        preheader=preheader,
    )
    if not dry_run:
        # Before the due check, the issue and any claim: a missing key must not leave a
        # frozen issue behind.
        require_secret_key(settings)

    if retry_failed is not None:
        ref, requeued = sending.retry_failed(app.db, retry_failed or None, now=now)
        if not requeued:
            click.echo(f"Nothing to retry in issue {ref.number} ({ref.label}): no failed "
                       "delivery with a temporary or unknown cause. 5xx rejections, and "
                       "readers who bounced or left, are never retried.")
            return
        if not quiet:
            click.echo(f"Requeued {requeued} failed deliveries of issue {ref.number} "
                       f"({ref.label}).")
        window = sending.window_of(ref)
    elif if_due:
        due = sending.check_due(app.db, settings, now=now, force=force)
        if due.action == "stale" and due.issue is not None:
            # An unfinished old issue (a restored backup?) needs a person's decision.
            raise click.ClickException(due.message)
        if due.action == "stale":
            # Missed by more than the grace window: skip the week. Not an error, or cron
            # would report it every five minutes until the next scheduled moment.
            if not quiet:
                click.echo(due.message)
            return
        if due.action in ("sent", "paused", "cancelled"):
            if not quiet:
                click.echo(due.message)
            return
        window = due.period.window
    elif week or since or until:
        with app.db.read() as session:
            window = window_for(session, settings, week=week, since=since, until=until, now=now)
    else:
        window = sending.default_window(app.db, settings, now=now)

    if dry_run:
        report = sending.dry_run(app.db, settings, window, options=options)
        for line in report.lines:
            click.echo(line)
        for line in report.report.lines() if report.report else ():
            click.echo(line)
        click.echo(sending.gate_verdict(report.report, ignore_check=ignore_check))
        if report.report is not None and (
            report.report.errors or (report.report.overridable and not ignore_check)
        ):
            raise click.ClickException("the check found errors: this issue would not be sent")
        return

    if to:
        result = sending.send_test(app.db, settings, window, to, options=options)
        if result.outcome.value != "sent":
            raise click.ClickException(
                f"test copy to {to} not sent ({result.outcome.value}): "
                f"{result.code or ''} {result.text}".rstrip()
            )
        click.echo(f"Sent a test copy of the {window.label} issue to {to}.")
        return

    progress = _ProgressLine() if (not quiet and sys.stderr.isatty()) else None

    def on_created(summary_number: int, label: str, total: int) -> None:
        # Said before the first batch, so it comes above the progress bar.
        if not quiet:
            click.echo(f"Created issue {summary_number} ({label}) with {total} deliveries.")

    try:
        clock, retry_wait = utcnow, sending.DEFAULT_RETRY_WAIT
        if now is not None:
            # A pretended time stands still: never wait for a retry that it will not reach.
            clock, retry_wait = _frozen(now), 0.0
        summary = sending.send_issue(
            app.db, settings, window, options=options, ignore_check=ignore_check, rate=limit,
            worker_id=worker_id, on_progress=progress,
            on_check=lambda report: _echo_check(report, ignore_check=ignore_check),
            on_created=on_created, workers=workers, clock=clock, retry_wait=retry_wait,
        )
    except LockedError as exc:
        if if_due:
            # A cron run that overlaps a long send is normal: say so and stop quietly.
            if not quiet:
                click.echo(str(exc))
            return
        raise
    finally:
        if progress is not None:
            progress.end()

    did_something = summary.created or summary.sent_now or summary.failed_now or summary.retry_now
    if summary.status == "sent" and not did_something:
        if not quiet:
            click.echo(f"Issue {summary.number} ({summary.label}) already sent.")
            click.echo(summary.line)
            for line in summary.reason_lines:
                click.echo(line)
        sys.exit(summary.exit_code)
    if summary.stopped and not did_something:
        raise click.ClickException(
            f"issue {summary.number} ({summary.label}) is {summary.stopped}"
            + (f"; run `digest issues resume {summary.label}` first"
               if summary.stopped == "paused" else "")
        )
    click.echo(summary.line)
    if summary.stopped:
        click.echo(f"Stopped: the issue was {summary.stopped} from another terminal.")
    if summary.bounced_now and not quiet:
        click.echo(f"{summary.bounced_now} subscriber(s) marked bounced (address unknown).")
    for line in summary.reason_lines:
        click.echo(line)
    if summary.retry_note:
        click.echo(summary.retry_note)
    for error in summary.errors:
        click.echo(f"Error: {error}", err=True)
    sys.exit(summary.exit_code)


# ------------------------------------------------------------------------------ issues


@click.group("issues", invoke_without_command=True)
@click.pass_context
def issues_group(ctx: click.Context) -> None:
    """List issues with their delivery counts, or control a send in progress.

    \b
    Examples:
      digest issues
      digest issues show 2025-W47
      digest issues pause 2025-W47      # from another terminal: stops after the batch
      digest issues resume 2025-W47     # then run digest send again
      digest issues cancel 12 --yes
    """
    if ctx.invoked_subcommand is not None:
        return
    from digest import sending

    app = ctx.find_object(AppContext)
    assert app is not None
    rows = sending.list_issues(app.db)
    if not rows:
        click.echo("No issues yet. Create and send one with: digest send")
        return
    retryable = sending.retryable_by_issue(app.db)
    click.echo(f"{'#':>4}  {'label':<24}  {'status':<10}  {'pending':>7}  {'inflight':>8}  "
               f"{'sent':>7}  {'failed':>6}")
    for issue, counts in rows:
        shown = _status(issue.status, issue.id, retryable)
        click.echo(
            f"{issue.number:>4}  {issue.label:<24}  {shown:<10}"
            f"  {counts.pending:>7}  {counts.inflight:>8}  {counts.sent:>7}  {counts.failed:>6}"
        )
    for issue, _ in rows:
        if retryable.get(issue.id):
            click.echo(f"Issue {issue.number} ({issue.label}): {retryable[issue.id]} failed "
                       "deliveries had a temporary or unknown cause; once it is fixed, run: "
                       f"digest send --retry-failed {issue.label}")


def _status(status: str, issue_id: int, retryable: dict[int, int]) -> str:
    """An issue's status as shown: a sent issue that a retry could complete is not done."""
    return "incomplete" if status == "sent" and retryable.get(issue_id) else status


def _local(moment: datetime | None, app: AppContext) -> str:
    if moment is None:
        return "-"
    return f"{moment.astimezone(app.settings.tz):%Y-%m-%d %H:%M %Z}"


@issues_group.command("show")
@click.argument("issue")
@click.option("--errors", "error_count", type=click.IntRange(0, 1000), default=10,
              show_default=True, help="How many recent errors to list.")
@click.option("--now", "now_text", hidden=True, help="Testing only: pretend it is this time.")
@pass_app
def issues_show(app: AppContext, issue: str, error_count: int, now_text: str | None) -> None:
    """Details of one issue (label like 2025-W47, or number): window, counts, errors.

    \b
    Example:
      digest issues show 2025-W47
    """
    from digest import bounces, sending

    d = sending.issue_details(app.db, issue, errors=error_count, settings=app.settings,
                              now=_parse_now(now_text))
    c = d.counts
    status = _status(d.issue.status, d.issue.id, {d.issue.id: d.retryable})
    click.echo(f"Issue {d.issue.number} ({d.issue.label}): {status}")
    click.echo(f"  window   {_local(d.issue.window_start, app)} to "
               f"{_local(d.issue.window_end, app)}")
    if d.subject:
        click.echo(f"  subject  {d.subject}")
    click.echo(f"  created  {_local(d.created_at, app)}")
    if d.sent_at:
        click.echo(f"  sent     {_local(d.sent_at, app)}")
    click.echo(f"  deliveries  {c.total} total: {c.sent} sent, {c.failed} failed, "
               f"{c.pending} pending, {c.inflight} in flight, {c.skipped} skipped")
    if d.retry_after is not None and c.pending:
        click.echo(f"  next retry  {_local(d.retry_after, app)}")
    _show_waves(d.waves, app)
    if d.lease_owner:
        click.echo(f"  sender lease  {d.lease_owner}")
    for owner, until, rows in d.senders:
        click.echo(f"  in flight  {rows} row(s) claimed by {owner} until {_local(until, app)}")
    found = bounces.issue_counts(app.db, d.issue.id)
    click.echo(f"  bounces  {found.get('hard', 0)} hard, {found.get('soft', 0)} soft, "
               f"{found.get('policy', 0)} refused by policy, {found.get('delayed', 0)} delayed; "
               f"complaints {found.get('complaint', 0)}")
    if d.errors:
        click.echo("  last errors:")
        for email, attempts, code, reply in d.errors:
            click.echo(f"    {email}  (attempt {attempts}) {code or ''} {reply}".rstrip())
    if d.retryable:
        click.echo(f"  {d.retryable} failed deliveries had a temporary or unknown cause; once "
                   f"it is fixed, run: digest send --retry-failed {d.issue.label}")


#: Waves listed one per line before the rest are summed up.
_WAVES_SHOWN = 8


def _show_waves(waves: list[tuple[datetime, int]], app: AppContext) -> None:
    """The first attempts still to come, one line per due moment (deliver_at = "local …")."""
    if not waves:
        return
    total = sum(rows for _, rows in waves)
    click.echo(f"  still to come  {total} deliveries in {len(waves)} wave(s), each at its "
               "readers' hour (shown in the publication's zone):")
    for when, rows in waves[:_WAVES_SHOWN]:
        click.echo(f"    {_local(when, app)}  {rows}")
    rest = waves[_WAVES_SHOWN:]
    if rest:
        click.echo(f"    … {sum(r for _, r in rest)} more in {len(rest)} later wave(s), the "
                   f"last at {_local(rest[-1][0], app)}")


@issues_group.command("pause")
@click.argument("issue")
@pass_app
def issues_pause(app: AppContext, issue: str) -> None:
    """Pause a send in progress; running senders stop after their current batch.

    \b
    Example:
      digest issues pause 2025-W47
    """
    from digest import sending

    ref = sending.pause_issue(app.db, issue)
    click.echo(f"Paused issue {ref.number} ({ref.label}). Running senders stop after their "
               f"current batch. Resume with: digest issues resume {ref.label}")


@issues_group.command("resume")
@click.argument("issue")
@pass_app
def issues_resume(app: AppContext, issue: str) -> None:
    """Allow a paused issue to be sent again; then run digest send (or wait for cron).

    \b
    Example:
      digest issues resume 2025-W47 && digest send --week 2025-W47
    """
    from digest import sending

    ref = sending.resume_issue(app.db, issue)
    click.echo(f"Resumed issue {ref.number} ({ref.label}). Continue sending with: digest send "
               f"(it resumes the unfinished issue), or wait for cron's digest send --if-due.")


@issues_group.command("cancel")
@click.argument("issue")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def issues_cancel(app: AppContext, issue: str, yes: bool) -> None:
    """Cancel an unfinished issue for good: nothing more of it is sent.

    \b
    Example:
      digest issues cancel 2025-W47 --yes
    """
    from digest import sending

    ref = sending.lookup_issue(app.db, issue)
    if not yes:
        click.confirm(f"Cancel issue {ref.number} ({ref.label}) for good?", abort=True)
    ref, skipped = sending.cancel_issue(app.db, issue)
    click.echo(f"Cancelled issue {ref.number} ({ref.label}); {skipped} unsent deliveries "
               "skipped.")


# ------------------------------------------------------------------------------ schedule


@click.command("schedule")
@click.option("--count", "-n", type=click.IntRange(1, 100), default=5, show_default=True,
              help="How many upcoming run times to list.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the crontab line and the unit to run in (default: the folder "
                   "of the settings file in use, else the current folder).")
@click.option("--now", "now_text", hidden=True, help="Testing only: pretend it is this time.")
@pass_app
def schedule_cmd(app: AppContext, count: int, workdir: Path | None, now_text: str | None) -> None:
    """Show when the weekly issue goes out, and how to run digest send --if-due from cron.

    The schedule is schedule_weekday + schedule_time in schedule_timezone (default:
    timezone). Each issue covers the week up to its scheduled moment. A missed send is
    caught up within schedule_grace_hours; after that the week is stale and skipped.

    The crontab line works as cron runs it: no terminal, PATH=/usr/bin:/bin and no DIGEST_*
    variables. It changes into the folder, names this installation's digest script and the
    settings file; settings that come from the environment or the command line are listed
    as a warning, since cron will not see them.

    \b
    Example:
      DIGEST_SCHEDULE_WEEKDAY=monday DIGEST_SCHEDULE_TIME=07:30 digest schedule
    """
    from digest.schedule import Schedule, crontab_line, systemd_units

    now = _parse_now(now_text) or datetime.now(UTC)
    schedule = Schedule.from_settings(app.settings)
    period = schedule.period(now)
    if schedule.spread:
        click.echo(f"Weekly on {app.settings.schedule_weekday.capitalize()}, each reader at "
                   f"{schedule.at:%H:%M} in their own time zone (deliver_at): the issue is "
                   f"frozen when that day reaches {schedule.at:%H:%M} first (UTC+14) and goes "
                   f"out in waves over {schedule.spread.total_seconds() / 3600:g} h; catch-up "
                   f"grace {app.settings.schedule_grace_hours:g} h after the last wave.")
    else:
        click.echo(f"Weekly on {app.settings.schedule_weekday.capitalize()} at "
                   f"{schedule.at:%H:%M} {schedule.tz.key}; catch-up grace "
                   f"{app.settings.schedule_grace_hours:g} h.")
    click.echo(f"Current period: {period.window.label}, due "
               f"{period.due_at.astimezone(schedule.tz):%a %Y-%m-%d %H:%M %Z}, stale after "
               f"{period.stale_at.astimezone(schedule.tz):%a %Y-%m-%d %H:%M %Z}.")
    click.echo(f"Next {count} run(s):")
    for moment in schedule.next_runs(now, count):
        local = moment.astimezone(schedule.tz)
        click.echo(f"  {schedule.window(moment).label}  {local:%a %Y-%m-%d %H:%M %Z}  "
                   f"({moment:%Y-%m-%d %H:%M} UTC)")
    click.echo("")
    config_path = app.loaded.config_path
    config = config_path.resolve() if config_path is not None else None
    folder = (workdir or (config.parent if config else Path.cwd())).resolve()
    # ./digest.toml in the folder is found by the cd; any other file is named.
    config_arg = str(config) if config and config != folder / "digest.toml" else None
    # cron and systemd do not see a virtualenv's PATH: name this installation's script.
    beside = Path(sys.executable).with_name("digest")
    command = str(beside) if beside.exists() else shutil.which("digest") or "digest"
    click.echo("crontab line (crontab -e):")
    click.echo("  " + crontab_line(str(folder), command, config_arg))
    unseen = sorted(name for name, source in app.loaded.sources.items()
                    if source.startswith("env ") or source == "command line")
    if unseen:
        click.echo(
            "warning: cron and systemd pass no DIGEST_* variables and no options, so the "
            "lines above will not see these settings: " + ", ".join(unseen) + ". Put them "
            f"into {folder / 'digest.toml'} (chmod 600 if it holds secrets), or as NAME=value "
            "lines at the top of the crontab, or in an EnvironmentFile= for systemd.",
            err=True,
        )
    service, timer = systemd_units(str(folder), command=command, config=config_arg)
    click.echo("")
    click.echo("or a systemd timer: /etc/systemd/system/digest-send.service")
    click.echo(service)
    click.echo("/etc/systemd/system/digest-send.timer")
    click.echo(timer)
    click.echo("then: systemctl daemon-reload && systemctl enable --now digest-send.timer")


COMMANDS: list[click.Command] = [send, issues_group, schedule_cmd]
