"""Delivery at the reader's hour: `digest send --if-due`, run from cron with a pretended
clock (--now, never a wait), sends each reader the issue at 08:00 in their own zone, keeps
retries inside the send window, and sends nobody twice across a crash between the waves."""

from __future__ import annotations

import email
import email.policy
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from digest.cli import main
from digest.config import Settings
from digest.db import Database
from digest.models import Delivery, Subscriber
from digest.schedule import Schedule
from tests.conftest import digest_env, seed_articles, smtp_settings
from tests.smtp_server import SMTPTestServer

Spawn = Callable[..., subprocess.Popen[bytes]]

#: Readers per zone; "" is a reader who never set one (the publication's zone).
ZONES = ("Pacific/Auckland", "Europe/London", "America/Los_Angeles", "")
PUBLICATION_ZONE = "America/New_York"
#: Thursday 20 November 2025, an hour before Friday 08:00 in Auckland (NZDT, UTC+13).
START = datetime(2025, 11, 20, 17, 0, tzinfo=UTC)


def reader(zone: str, n: int) -> str:
    place = zone.rpartition("/")[2].lower() or "nowhere"
    return f"{place}{n}@readers.example.org"


class Cron:
    """`digest send --if-due --now T` as cron would run it, with the clock in the test's hands."""

    def __init__(self, runner: CliRunner, env: dict[str, str], server: SMTPTestServer) -> None:
        self.runner, self.env, self.server = runner, env, server
        self.seen = 0
        self.received_at: dict[str, list[datetime]] = {}

    def run(self, now: datetime, *extra: str, code: int = 0) -> str:
        """One run; code 4 means a real retry is waiting (rows not yet due never cause it)."""
        result = self.runner.invoke(
            main, ["send", "--if-due", "--now", now.isoformat(), *extra], env=self.env
        )
        assert result.exit_code == code, result.output
        self.note(now)
        return result.output

    def note(self, now: datetime) -> None:
        """Who received a message since the last look, stamped with the pretended time."""
        messages = self.server.messages
        for message in messages[self.seen:]:
            for rcpt in message.rcpt_tos:
                self.received_at.setdefault(rcpt, []).append(now)
        self.seen = len(messages)


@pytest.fixture
def local_env(db: Database, settings: Settings, runner: CliRunner,
              smtp_server: SMTPTestServer) -> dict[str, str]:
    """Settings for deliver_at = "local 08:00", two articles in the week, and the readers."""
    config = smtp_settings(settings, smtp_server, timezone=PUBLICATION_ZONE,
                           deliver_at="local 08:00")
    env = digest_env(config, DIGEST_TIMEZONE=PUBLICATION_ZONE, DIGEST_DELIVER_AT="local 08:00")
    seed_articles(db, Schedule.from_settings(config).period(START + timedelta(days=1)).window, 2)
    for zone in ZONES:
        for n in range(3):
            args = ["subscribers", "add", reader(zone, n)]
            if zone:
                args += ["--timezone", zone]
            result = runner.invoke(main, args, env=env)
            assert result.exit_code == 0, result.output
    return env


def local_eight(zone: str) -> datetime:
    """08:00 on Friday 21 November 2025 in zone (the publication's when blank), as UTC."""
    tz = ZoneInfo(zone or PUBLICATION_ZONE)
    return datetime(2025, 11, 21, 8, 0, tzinfo=tz).astimezone(UTC)


def hours(start: datetime, count: int) -> list[datetime]:
    return [start + timedelta(hours=h) for h in range(count)]


def test_each_reader_gets_the_issue_at_eight_in_their_own_zone(
    runner: CliRunner, local_env: dict[str, str], smtp_server: SMTPTestServer
) -> None:
    cron = Cron(runner, local_env, smtp_server)
    first = cron.run(START)
    assert first.startswith("Nothing due: the 2025-W46 issue was due"), first
    created = cron.run(START + timedelta(hours=1))  # Thu 18:00 UTC: Fri 08:00 at UTC+14
    assert "Created issue 1 (2025-W47) with 12 deliveries." in created
    for moment in hours(START + timedelta(hours=2), 31):
        cron.run(moment)

    expected = {reader(zone, n): [local_eight(zone)] for zone in ZONES for n in range(3)}
    assert cron.received_at == expected
    # In the readers' own words: 08:00 on the Friday, wherever they are.
    for zone in ZONES:
        got = cron.received_at[reader(zone, 0)][0].astimezone(ZoneInfo(zone or PUBLICATION_ZONE))
        assert (got.strftime("%a %H:%M")) == "Fri 08:00"
    # Auckland's wave goes first and Los Angeles's last, 21 hours later.
    assert local_eight("America/Los_Angeles") - local_eight("Pacific/Auckland") == \
        timedelta(hours=21)
    done = cron.run(START + timedelta(hours=40))
    assert "already sent" in done
    # The issue is dated the day its readers get it, Friday, in every part of every message
    # (its window ends on Thursday in New York, where the publication is).
    for message in smtp_server.messages:
        received = email.message_from_bytes(message.data, policy=email.policy.default)
        parts = [part.get_content() for part in received.walk() if part.get_content_maintype()
                 == "text"]
        assert len(parts) == 2
        for part in parts:
            assert "21 November 2025" in part
            assert "20 November 2025" not in part


def test_issues_show_lists_the_waves_still_to_come(
    runner: CliRunner, local_env: dict[str, str], smtp_server: SMTPTestServer
) -> None:
    """An editor asks, mid-send, who is still to get the issue and when."""
    cron = Cron(runner, local_env, smtp_server)
    cron.run(START + timedelta(hours=1))  # the issue is made; no reader's 08:00 yet

    def show(now: datetime) -> list[str]:
        result = runner.invoke(main, ["issues", "show", "2025-W47", "--now", now.isoformat()],
                               env=local_env)
        assert result.exit_code == 0, result.output
        return result.output.splitlines()

    def line(zone: str) -> str:
        shown = local_eight(zone).astimezone(ZoneInfo(PUBLICATION_ZONE))
        return f"    {shown:%Y-%m-%d %H:%M %Z}  3"

    before = show(START + timedelta(hours=1))
    waves = before[before.index(next(t for t in before if "still to come" in t)):][:5]
    assert "12 deliveries in 4 wave(s)" in waves[0], before
    # Earliest first: Auckland (Thu 14:00 in New York), London, New York, Los Angeles.
    order = ("Pacific/Auckland", "Europe/London", "", "America/Los_Angeles")
    assert waves[1:] == [line(zone) for zone in order], before

    cron.run(local_eight("Pacific/Auckland"))  # Auckland's wave goes out
    after = show(local_eight("Pacific/Auckland"))
    assert any("9 deliveries in 3 wave(s)" in t for t in after), after
    assert line("Pacific/Auckland") not in after
    cron.run(START + timedelta(hours=40))
    assert not any("still to come" in t for t in show(START + timedelta(hours=40)))


def test_the_send_window_holds_a_retry_until_it_opens(
    runner: CliRunner, local_env: dict[str, str], smtp_server: SMTPTestServer
) -> None:
    env = {**local_env, "DIGEST_SEND_WINDOW": "07:00-20:00",
           # The first retry would fall at 21:00 London, after the window closed.
           "DIGEST_SEND_RETRY_BASE": str(13 * 3600)}
    cron = Cron(runner, env, smtp_server)
    cron.run(START + timedelta(hours=1))
    cron.run(local_eight("Pacific/Auckland"))
    london = reader("Europe/London", 0)
    # The 4th transaction is London's first reader (Auckland's three went first).
    smtp_server.fail_at(4, "rcpt", reply="451 4.3.0 Mailbox busy, try again later")
    cron.run(local_eight("Europe/London"), code=4)
    assert london not in cron.received_at
    assert reader("Europe/London", 1) in cron.received_at

    # 21:00 London (the retry's own time) up to 06:00 next morning: the window is shut.
    friday_nine_pm = local_eight("Europe/London") + timedelta(hours=13)
    for moment in hours(friday_nine_pm, 10):
        cron.run(moment, code=4)
    assert london not in cron.received_at
    saturday_seven = datetime(2025, 11, 22, 7, 0, tzinfo=UTC)  # London is on GMT
    cron.run(saturday_seven)
    assert cron.received_at[london] == [saturday_seven]
    assert all(len(times) == 1 for times in cron.received_at.values())


@pytest.mark.slow
def test_a_crash_between_the_waves_sends_nobody_twice(
    db: Database, runner: CliRunner, local_env: dict[str, str], smtp_server: SMTPTestServer,
    digest_process: Spawn,
) -> None:
    cron = Cron(runner, local_env, smtp_server)
    cron.run(START + timedelta(hours=1))
    cron.run(local_eight("Pacific/Auckland"))
    assert len(smtp_server.messages) == 3

    # London's wave: the sender is killed while the server holds the wave's first MAIL
    # FROM, so its batch is committed in flight and none of it was delivered. (A message
    # delivered inside a killed batch may go twice, with one Message-ID: test_send_crash.)
    smtp_server.fail_at(4, "mail", delay=30)
    london = local_eight("Europe/London")
    # One connection, so no second connection carries the rest of the batch meanwhile.
    crashed = digest_process(["send", "--if-due", "--now", london.isoformat()],
                             {**local_env, "DIGEST_SMTP_CONNECTIONS": "1"})
    deadline = time.monotonic() + 30
    while smtp_server.transactions < 4 and crashed.poll() is None:
        assert time.monotonic() < deadline, "the sender never reached the held message"
        time.sleep(0.01)
    crashed.send_signal(signal.SIGKILL)
    crashed.wait(10)
    cron.note(london)
    assert len(smtp_server.messages) == 3
    with db.read() as session:
        statuses = sorted(session.scalars(select(Delivery.status)))
    assert statuses.count("inflight") == 3 and statuses.count("sent") == 3

    # cron carries on; the rerun sees the dead pid and sends the rest of London at once.
    for moment in [london, *hours(london + timedelta(hours=1), 12)]:
        cron.run(moment)
    expected = {reader(zone, n): [local_eight(zone)] for zone in ZONES for n in range(3)}
    assert cron.received_at == expected
    ids = [m.message_id for m in smtp_server.messages]
    assert len(ids) == len(set(ids)) == 12


# --- where a reader's zone comes from (the form: test_signup_timezone)


def zones(db: Database) -> dict[str, str]:
    with db.read() as session:
        return {p.email: p.timezone for p in session.scalars(select(Subscriber))}


def test_csv_import_reads_a_timezone_column(
    runner: CliRunner, settings: Settings, db: Database, tmp_path: Path
) -> None:
    env = {"DIGEST_DATABASE_URL": settings.database_url}
    listing = tmp_path / "list.csv"
    listing.write_text("email,name,timezone\n"
                       "kiri@example.org,Kiri,Pacific/Auckland\n"
                       "ada@example.org,Ada,\n"
                       "bad@example.org,Bad,Mars/Olympus_Mons\n", encoding="utf-8")
    result = runner.invoke(main, ["subscribers", "import", str(listing)], env=env)
    assert result.exit_code == 0, result.output
    assert "line 4: time zone 'Mars/Olympus_Mons' is not an IANA time zone name" \
        in result.output
    assert zones(db) == {"kiri@example.org": "Pacific/Auckland", "ada@example.org": ""}

    # A file without the column leaves the zones alone; one with it updates them.
    listing.write_text("email,name\nkiri@example.org,Kiri T\n", encoding="utf-8")
    assert runner.invoke(main, ["subscribers", "import", str(listing)], env=env).exit_code == 0
    listing.write_text("email,timezone\nada@example.org,Europe/London\n", encoding="utf-8")
    assert runner.invoke(main, ["subscribers", "import", str(listing)], env=env).exit_code == 0
    assert zones(db) == {"kiri@example.org": "Pacific/Auckland",
                         "ada@example.org": "Europe/London"}

    # The export carries the column, so export → import keeps every reader's zone.
    exported = runner.invoke(main, ["subscribers", "export"], env=env)
    assert exported.exit_code == 0, exported.output
    header, *lines = exported.output.splitlines()
    assert header.endswith(",timezone")
    assert sorted(line.rsplit(",", 1)[1] for line in lines) == ["Europe/London",
                                                                "Pacific/Auckland"]
    person = runner.invoke(main, ["subscribers", "export-data", "kiri@example.org"], env=env)
    assert '"timezone": "Pacific/Auckland"' in person.output


def test_subscribers_add_and_update_set_a_checked_timezone(
    runner: CliRunner, settings: Settings, db: Database
) -> None:
    env = {"DIGEST_DATABASE_URL": settings.database_url}
    added = runner.invoke(main, ["subscribers", "add", "la@example.org",
                                 "--timezone", "America/Los_Angeles"], env=env)
    assert added.exit_code == 0, added.output
    bad = runner.invoke(main, ["subscribers", "update", "la@example.org",
                               "--timezone", "Pacific/Atlantis"], env=env)
    assert bad.exit_code == 1
    assert ("Error: time zone 'Pacific/Atlantis' is not an IANA time zone name; write it like "
            "Europe/London, America/Los_Angeles or Pacific/Auckland") in bad.output
    assert zones(db) == {"la@example.org": "America/Los_Angeles"}
    moved = runner.invoke(main, ["subscribers", "update", "la@example.org",
                                 "--timezone", "Europe/London"], env=env)
    assert moved.output == "Updated la@example.org (time zone Europe/London).\n"
    cleared = runner.invoke(main, ["subscribers", "update", "la@example.org", "--timezone", ""],
                            env=env)
    assert cleared.exit_code == 0 and zones(db) == {"la@example.org": ""}
    missing = runner.invoke(main, ["subscribers", "update", "nobody@example.org",
                                   "--timezone", "Europe/London"], env=env)
    assert missing.exit_code == 1 and "nobody@example.org is not on the list" in missing.output


def test_bad_deliver_at_and_send_window_say_how_to_write_them(
    runner: CliRunner, settings: Settings
) -> None:
    env = {"DIGEST_DATABASE_URL": settings.database_url}
    late = runner.invoke(main, ["schedule"], env={**env, "DIGEST_DELIVER_AT": "8am local"})
    assert late.exit_code == 1
    assert "deliver_at '8am local' is not understood; write deliver_at = \"local 08:00\"" \
        in late.output
    shut = runner.invoke(main, ["schedule"], env={**env, "DIGEST_SEND_WINDOW": "09:00-09:00"})
    assert shut.exit_code == 1
    assert "send_window '09:00-09:00' is not understood" in shut.output


def test_schedule_explains_the_waves(runner: CliRunner, local_env: dict[str, str]) -> None:
    result = runner.invoke(main, ["schedule", "--now", START.isoformat()], env=local_env)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        "Weekly on Friday, each reader at 08:00 in their own time zone (deliver_at): the "
        "issue is frozen when that day reaches 08:00 first (UTC+14) and goes out in waves "
        "over 26 h; catch-up grace 24 h after the last wave.")
    assert "2025-W47  Fri 2025-11-21 08:00 +14  (2025-11-20 18:00 UTC)" in result.output


def test_a_send_window_alone_holds_a_manual_send_until_morning(
    runner: CliRunner, local_env: dict[str, str], smtp_server: SMTPTestServer
) -> None:
    """Without deliver_at the window is in the publication's zone (New York here)."""
    env = {k: v for k, v in local_env.items() if k != "DIGEST_DELIVER_AT"}
    env["DIGEST_SEND_WINDOW"] = "09:00-17:00"
    evening = datetime(2025, 11, 21, 23, 0, tzinfo=UTC)  # 18:00 in New York
    since = ["--since", "2025-11-13"]
    late = runner.invoke(main, ["send", *since, "--now", evening.isoformat()], env=env)
    assert late.exit_code == 0, late.output
    assert "12 deliveries wait for their readers' hour" in late.output
    assert smtp_server.messages == []
    morning = datetime(2025, 11, 22, 14, 0, tzinfo=UTC)  # 09:00 in New York
    early = runner.invoke(main, ["send", "--now", (morning - timedelta(minutes=1)).isoformat()],
                          env=env)
    assert "12 deliveries wait" in early.output, early.output
    assert early.exit_code == 0 and smtp_server.messages == []
    sent = runner.invoke(main, ["send", "--now", morning.isoformat()], env=env)
    assert sent.exit_code == 0, sent.output
    assert "12 sent, 0 failed, 0 pending" in sent.output
    assert len(smtp_server.messages) == 12
