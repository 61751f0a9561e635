"""When the weekly issue is due: local times across DST, catch-up grace, stale weeks, --if-due."""

from __future__ import annotations

import itertools
import sys
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from digest.cli import main
from digest.config import Settings
from digest.db import Database
from digest.errors import ConfigError
from digest.mail.memory import MemoryBackend
from digest.models import Delivery, Issue
from digest.schedule import Schedule, crontab_line, parse_time, systemd_units
from digest.sending import create_issue, prepare
from tests.conftest import seed_articles, seed_subscribers

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
FRIDAY_9_UTC = Schedule(weekday=4, at=time(9), tz=ZoneInfo("UTC"), grace=timedelta(hours=24))
DUE_W47 = datetime(2025, 11, 21, 9, tzinfo=UTC)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# ------------------------------------------------------------------------------ pure schedule


def test_the_period_is_the_week_whose_moment_most_recently_passed() -> None:
    """At 09:00 on Friday the W47 period begins; one minute earlier it is still W46."""
    period = FRIDAY_9_UTC.period(utc(2025, 11, 21, 9, 0))
    assert period.due_at == DUE_W47
    assert period.window.start == utc(2025, 11, 14, 9) and period.window.end == DUE_W47
    assert period.window.label == "2025-W47"
    earlier = FRIDAY_9_UTC.period(utc(2025, 11, 21, 8, 59))
    assert earlier.due_at == utc(2025, 11, 14, 9) and earlier.window.label == "2025-W46"
    assert FRIDAY_9_UTC.period(utc(2025, 11, 27, 23, 0)).window.label == "2025-W47"


def test_consecutive_windows_tile_time() -> None:
    """Each window starts where the previous one ended: no gap, no overlap."""
    runs = FRIDAY_9_UTC.next_runs(utc(2025, 1, 1), 60)
    windows = [FRIDAY_9_UTC.window(moment) for moment in runs]
    for before, after in itertools.pairwise(windows):
        assert before.end == after.start
    assert len({w.label for w in windows}) == 60


def test_grace_window_then_stale() -> None:
    period = FRIDAY_9_UTC.period(DUE_W47 + timedelta(hours=5))
    assert not period.is_stale(DUE_W47 + timedelta(hours=23, minutes=59))
    assert period.is_stale(DUE_W47 + timedelta(hours=24))


def test_week_across_the_autumn_dst_change_is_169_hours() -> None:
    """Berlin, Friday 09:00: 24 Oct is CEST (07:00 UTC), 31 Oct is CET (08:00 UTC)."""
    berlin = Schedule(weekday=4, at=time(9), tz=BERLIN, grace=timedelta(hours=24))
    period = berlin.period(utc(2025, 10, 31, 8, 30))
    assert period.due_at == utc(2025, 10, 31, 8)
    assert period.window.start == utc(2025, 10, 24, 7)
    assert period.window.end - period.window.start == timedelta(hours=169)
    assert period.window.label == "2025-W44"
    # Still 09:00 local on the weeks either side.
    for moment in berlin.next_runs(utc(2025, 10, 10), 6):
        assert moment.astimezone(BERLIN).time() == time(9)


def test_a_time_inside_the_spring_forward_gap_runs_an_hour_later() -> None:
    """02:30 does not exist on 9 March 2025 in New York: that week it runs at 03:30 EDT."""
    sunday = Schedule(weekday=6, at=time(2, 30), tz=NEW_YORK, grace=timedelta(hours=24))
    runs = sunday.next_runs(utc(2025, 3, 1), 3)
    local = [m.astimezone(NEW_YORK) for m in runs]
    assert [m.date().isoformat() for m in local] == ["2025-03-02", "2025-03-09", "2025-03-16"]
    assert [m.strftime("%H:%M %Z") for m in local] == ["02:30 EST", "03:30 EDT", "02:30 EDT"]
    assert runs[1] - runs[0] == timedelta(hours=168)
    assert runs[2] - runs[1] == timedelta(hours=167)


def test_next_runs_are_after_now_in_order() -> None:
    runs = FRIDAY_9_UTC.next_runs(DUE_W47, 3)
    assert runs == [DUE_W47 + timedelta(days=7 * i) for i in (1, 2, 3)]


def test_settings_decide_the_schedule() -> None:
    schedule = Schedule.from_settings(Settings(timezone="Europe/Berlin", schedule_weekday="Monday",
                                               schedule_time="7:30"))
    assert (schedule.weekday, schedule.at, schedule.tz.key) == (0, time(7, 30), "Europe/Berlin")
    own = Schedule.from_settings(Settings(timezone="Europe/Berlin",
                                          schedule_timezone="Asia/Tokyo"))
    assert own.tz.key == "Asia/Tokyo"
    with pytest.raises(ConfigError, match="09:00"):
        parse_time("25:00")


def test_cron_and_systemd_snippets() -> None:
    assert crontab_line() == "*/5 * * * * cd /srv/digest && digest send --if-due --quiet"
    service, timer = systemd_units(command="/opt/digest/bin/digest")
    assert "ExecStart=/opt/digest/bin/digest send --if-due --quiet" in service
    assert "OnCalendar=*:0/5" in timer and "Persistent=true" in timer


# ------------------------------------------------------------------------------ --if-due


@pytest.fixture
def env(settings: Settings, db: Database) -> dict[str, str]:
    """Environment for digest send through the memory backend, with this week's articles."""
    MemoryBackend.clear()
    window = FRIDAY_9_UTC.window(DUE_W47)
    seed_articles(db, window, 2)
    seed_subscribers(db, 12)
    return {
        "DIGEST_DATABASE_URL": settings.database_url,
        "DIGEST_SECRET_KEY": ",".join(settings.secret_key),
        "DIGEST_POSTAL_ADDRESS": settings.postal_address,
        "DIGEST_BASE_URL": settings.base_url,
        "DIGEST_FROM_EMAIL": settings.from_email,
        "DIGEST_BACKEND": "memory",
    }


def if_due(runner: CliRunner, env: dict[str, str], now: datetime, *extra: str) -> tuple[int, str]:
    result = runner.invoke(main, ["send", "--if-due", "--now", now.isoformat(), *extra], env=env)
    return result.exit_code, result.output


def issue_count(db: Database) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.count()).select_from(Issue)) or 0)


def test_if_due_sends_once_across_repeated_calls(
    runner: CliRunner, env: dict[str, str], db: Database
) -> None:
    """Cron every five minutes: the first call after 09:00 sends, later ones stay quiet."""
    code, output = if_due(runner, env, DUE_W47 + timedelta(minutes=3), "--quiet")
    assert code == 0, output
    # The check's warnings come first, also under --quiet: cron mails them.
    assert output.startswith("warning: DKIM is not configured")
    assert output.endswith("\nIssue 1 (2025-W47): 12 sent, 0 failed, 0 pending\n")
    for minutes in (8, 13, 60 * 30):
        code, output = if_due(runner, env, DUE_W47 + timedelta(minutes=minutes), "--quiet")
        assert (code, output) == (0, "")
    code, output = if_due(runner, env, DUE_W47 + timedelta(minutes=18))
    assert (code, output) == (0, "Issue 1 (2025-W47) already sent.\n")
    assert len(MemoryBackend.outbox) == 12 and issue_count(db) == 1
    with db.read() as session:
        issue = session.scalars(select(Issue)).one()
    assert (issue.window_start, issue.window_end) == (utc(2025, 11, 14, 9), DUE_W47)


def test_if_due_catches_up_within_the_grace_window(
    runner: CliRunner, env: dict[str, str], db: Database
) -> None:
    """The machine was off at 09:00 Friday and comes back 23 hours later: the issue goes out."""
    code, output = if_due(runner, env, DUE_W47 + timedelta(hours=23))
    assert code == 0, output
    assert "12 sent, 0 failed, 0 pending" in output
    assert len(MemoryBackend.outbox) == 12


def test_if_due_skips_a_stale_week_unless_forced(
    runner: CliRunner, env: dict[str, str], db: Database
) -> None:
    """25 hours late the week is stale: nothing is created or sent; --force sends it."""
    code, output = if_due(runner, env, DUE_W47 + timedelta(hours=25))
    assert code == 0
    assert output.startswith("Nothing due: the 2025-W47 issue was due Fri 2025-11-21 09:00 UTC")
    assert issue_count(db) == 0 and MemoryBackend.outbox == []
    assert if_due(runner, env, DUE_W47 + timedelta(hours=25), "--quiet") == (0, "")
    code, output = if_due(runner, env, DUE_W47 + timedelta(hours=25), "--force")
    assert code == 0 and "12 sent" in output, output


def test_a_restored_backup_does_not_resend_an_old_week(
    runner: CliRunner, env: dict[str, str], db: Database, settings: Settings
) -> None:
    """An unfinished issue found after the grace window is refused, loudly, without --force."""
    window = FRIDAY_9_UTC.window(DUE_W47)
    create_issue(db, settings, window, prepare(db, settings, window, check=False).content)
    code, output = if_due(runner, env, DUE_W47 + timedelta(days=2), "--quiet")
    assert code == 1
    assert "not resuming issue 1 (2025-W47)" in output and "restored from a backup" in output
    assert MemoryBackend.outbox == []
    with db.read() as session:
        assert {d.status for d in session.scalars(select(Delivery))} == {"pending"}


def test_if_due_leaves_a_paused_issue_alone(
    runner: CliRunner, env: dict[str, str], db: Database, settings: Settings
) -> None:
    window = FRIDAY_9_UTC.window(DUE_W47)
    create_issue(db, settings, window, prepare(db, settings, window, check=False).content)
    assert runner.invoke(main, ["issues", "pause", "2025-W47"], env=env).exit_code == 0
    assert if_due(runner, env, DUE_W47 + timedelta(minutes=5), "--quiet") == (0, "")
    assert MemoryBackend.outbox == []


def test_if_due_across_the_dst_change(
    runner: CliRunner, env: dict[str, str], db: Database
) -> None:
    """Berlin schedule: the W44 issue covers the 169 hours up to Friday 09:00 CET."""
    berlin = {**env, "DIGEST_TIMEZONE": "Europe/Berlin"}
    window = Schedule(4, time(9), BERLIN, timedelta(hours=24)).window(utc(2025, 10, 31, 8))
    seed_articles(db, window, 2)
    code, output = if_due(runner, berlin, utc(2025, 10, 31, 8, 2))
    assert code == 0 and "(2025-W44): 12 sent" in output, output
    with db.read() as session:
        issue = session.scalars(select(Issue)).one()
    assert issue.window_end - issue.window_start == timedelta(hours=169)


def test_schedule_command_prints_runs_and_snippets(runner: CliRunner) -> None:
    result = runner.invoke(main, ["schedule", "-n", "2", "--now", "2025-10-20T12:00",
                                  "--workdir", "/srv/digest"],
                           env={"DIGEST_TIMEZONE": "Europe/Berlin"})
    assert result.exit_code == 0, result.output
    assert "Weekly on Friday at 09:00 Europe/Berlin; catch-up grace 24 h." in result.output
    assert "2025-W43  Fri 2025-10-24 09:00 CEST  (2025-10-24 07:00 UTC)" in result.output
    assert "2025-W44  Fri 2025-10-31 09:00 CET  (2025-10-31 08:00 UTC)" in result.output
    # cron and systemd get this installation's own script, not a PATH lookup.
    script = str(Path(sys.executable).with_name("digest"))
    assert f"*/5 * * * * cd /srv/digest && {script} send --if-due --quiet" in result.output
    assert f"ExecStart={script} send --if-due --quiet" in result.output
    assert "OnCalendar=*:0/5" in result.output
    # cron will not see DIGEST_TIMEZONE: say so, without any value.
    assert "will not see these settings: timezone. Put them into /srv/digest/digest.toml" in (
        result.output)
