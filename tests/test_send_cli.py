"""The send, issues and schedule commands: output, exit codes, and what they write."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import func, insert, select

from digest.cli import main
from digest.cli.send import _ProgressLine
from digest.config import Settings
from digest.db import Database
from digest.mail.memory import MemoryBackend
from digest.models import Article, Delivery, Issue, utcnow
from digest.sending import Progress, create_issue, prepare
from digest.store import outbox
from tests.conftest import seed_articles, seed_subscribers, send_window
from tests.smtp_server import SMTPTestServer

WEEK = ["send", "--week", "2025-W47"]


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    """DIGEST_* variables for the test database and the memory backend."""
    MemoryBackend.clear()
    return {
        "DIGEST_DATABASE_URL": settings.database_url,
        "DIGEST_SECRET_KEY": ",".join(settings.secret_key),
        "DIGEST_POSTAL_ADDRESS": settings.postal_address,
        "DIGEST_BASE_URL": settings.base_url,
        "DIGEST_FROM_EMAIL": settings.from_email,
        "DIGEST_BACKEND": "memory",
    }


def smtp_env(env: dict[str, str], server: SMTPTestServer, **extra: str) -> dict[str, str]:
    return {**env, "DIGEST_BACKEND": "smtp", "DIGEST_SMTP_HOST": server.host,
            "DIGEST_SMTP_PORT": str(server.port), "DIGEST_SMTP_SECURITY": "none", **extra}


def counts(db: Database) -> tuple[int, int]:
    with db.read() as session:
        return (int(session.scalar(select(func.count()).select_from(Issue)) or 0),
                int(session.scalar(select(func.count()).select_from(Delivery)) or 0))


@pytest.fixture
def week(db: Database, settings: Settings) -> Database:
    """Two articles in 2025-W47 and ten active subscribers."""
    seed_articles(db, send_window(settings), 2)
    seed_subscribers(db, 10)
    return db


def test_send_prints_what_it_did_and_one_summary_line(
    runner: CliRunner, env: dict[str, str], week: Database
) -> None:
    result = runner.invoke(main, WEEK, env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "Created issue 1 (2025-W47) with 10 deliveries.\n"
        "Issue 1 (2025-W47): 10 sent, 0 failed, 0 pending\n"
    )
    assert result.stderr.startswith("warning: DKIM is not configured")
    assert len(MemoryBackend.outbox) == 10
    again = runner.invoke(main, WEEK, env=env)
    assert again.exit_code == 0
    assert again.output == ("Issue 1 (2025-W47) already sent.\n"
                            "Issue 1 (2025-W47): 10 sent, 0 failed, 0 pending\n")
    assert runner.invoke(main, [*WEEK, "--quiet"], env=env).output == ""
    assert len(MemoryBackend.outbox) == 10


def test_an_empty_list_creates_no_issue_and_keeps_the_articles(
    runner: CliRunner, env: dict[str, str], db: Database, settings: Settings
) -> None:
    """With nobody to send to, the week's articles must not be marked as gone out."""
    seed_articles(db, send_window(settings), 2)
    result = runner.invoke(main, WEEK, env=env)
    assert result.exit_code == 1
    assert "no active subscribers" in result.output and "digest subscribers add" in result.output
    assert counts(db) == (0, 0)
    seed_subscribers(db, 3)
    later = runner.invoke(main, WEEK, env=env)
    assert later.exit_code == 0, later.output
    assert len(MemoryBackend.outbox) == 3


def test_quiet_prints_only_the_summary_line(
    runner: CliRunner, env: dict[str, str], week: Database
) -> None:
    result = runner.invoke(main, [*WEEK, "-q"], env=env)
    assert (result.exit_code, result.stdout) == (
        0, "Issue 1 (2025-W47): 10 sent, 0 failed, 0 pending\n")


def test_some_permanent_failures_exit_3(
    runner: CliRunner, env: dict[str, str], week: Database, smtp_server: SMTPTestServer
) -> None:
    smtp_server.reply_to_rcpt("r3@example.com", "550 5.1.1 User unknown")
    result = runner.invoke(main, WEEK, env=smtp_env(env, smtp_server))
    assert result.exit_code == 3, result.output
    assert "Issue 1 (2025-W47): 9 sent, 1 failed, 0 pending" in result.output
    assert "1 subscriber(s) marked bounced (address unknown)." in result.output


def test_temporary_failures_say_when_they_will_be_retried(
    runner: CliRunner, env: dict[str, str], week: Database, smtp_server: SMTPTestServer
) -> None:
    smtp_server.reply_to_rcpt("r3@example.com", "451 4.7.1 Greylisted, come back later")
    result = runner.invoke(main, WEEK, env=smtp_env(env, smtp_server))
    # Nothing failed, but the run did not deliver everything: its own exit status, not 0.
    assert result.exit_code == 4, result.output
    assert "Issue 1 (2025-W47): 9 sent, 0 failed, 1 pending" in result.output
    assert "Waiting for a retry, top reasons:\n       1 × 451 4.7.1 Greylisted" in result.output
    assert "1 deliveries will be retried after " in result.output
    assert "run digest send again (cron --if-due does)" in result.output
    show = runner.invoke(main, ["issues", "show", "2025-W47"], env=env)
    assert show.exit_code == 0, show.output
    assert "Issue 1 (2025-W47): sending" in show.output
    assert "  subject  Story 1 of 2025-W47 and 1 more story" in show.output
    assert "10 total: 9 sent, 0 failed, 1 pending, 0 in flight, 0 skipped" in show.output
    assert "r3@example.com  (attempt 1) 451 451 4.7.1 Greylisted" in show.output


def test_wrong_password_is_a_clear_error_and_marks_nothing(
    runner: CliRunner, env: dict[str, str], week: Database, smtp_server_factory: object
) -> None:
    server = smtp_server_factory(auth=("ann", "right"))  # type: ignore[operator]
    started = time.monotonic()
    result = runner.invoke(main, WEEK, env=smtp_env(
        env, server, DIGEST_SMTP_USERNAME="ann", DIGEST_SMTP_PASSWORD="wrong"))
    assert time.monotonic() - started < 5
    assert result.exit_code == 1
    assert f"Error: authentication failed for user 'ann' at 127.0.0.1:{server.port}" in (
        result.output)
    assert "check DIGEST_SMTP_USERNAME/DIGEST_SMTP_PASSWORD" in result.output
    assert counts(week) == (0, 0)


def test_check_errors_stop_the_send(runner: CliRunner, env: dict[str, str], db: Database) -> None:
    seed_subscribers(db, 3)
    result = runner.invoke(main, WEEK, env=env)
    assert result.exit_code == 1
    assert "Error: the issue did not pass the check:" in result.output
    assert "The issue has no articles" in result.output
    assert counts(db) == (0, 0)


def test_force_no_longer_skips_the_check(runner: CliRunner, env: dict[str, str],
                                         week: Database) -> None:
    """--force is the --if-due schedule guard only; the check has its own --ignore-check."""
    result = runner.invoke(main, [*WEEK, "--force"], env=env)
    assert result.exit_code == 2
    assert "--force only overrides the --if-due schedule guard" in result.output
    assert "--ignore-check" in result.output
    assert counts(week) == (0, 0)


def test_ignore_check_overrides_reputation_errors_only(
    runner: CliRunner, env: dict[str, str], week: Database
) -> None:
    plain_http = {**env, "DIGEST_BASE_URL": "http://news.example.org"}
    refused = runner.invoke(main, WEEK, env=plain_http)
    assert refused.exit_code == 1
    assert "re-run with --ignore-check to send anyway" in refused.output
    assert counts(week) == (0, 0)
    forced = runner.invoke(main, [*WEEK, "--ignore-check", "--quiet"], env=plain_http)
    assert forced.exit_code == 0, forced.output
    assert "error: List-Unsubscribe holds http://" in forced.stderr
    assert "(sending anyway: --ignore-check)" in forced.stderr
    assert "10 sent" in forced.stdout
    # A missing postal address is against the law, not a judgement call: never overridden.
    no_address = {**env, "DIGEST_POSTAL_ADDRESS": ""}
    never = runner.invoke(main, ["send", "--week", "2025-W46", "--ignore-check"],
                          env=no_address)
    assert never.exit_code == 1
    assert "postal_address is not set" in never.output


def add_http_story(db: Database, settings: Settings) -> None:
    """A story with a plain http:// link: the check warns, as it does for many real feeds."""
    with db.write() as session:
        session.execute(insert(Article).values(
            url="http://insecure.example.org/story", title="Plain HTTP story", section="World",
            published_at=send_window(settings).start + timedelta(hours=5)))


def test_check_warnings_are_printed_and_do_not_stop_the_send(
    runner: CliRunner, env: dict[str, str], week: Database, settings: Settings
) -> None:
    add_http_story(week, settings)
    result = runner.invoke(main, [*WEEK, "--quiet"], env=env)
    assert result.exit_code == 0, result.output
    # --quiet still prints them: cron mails what a command prints.
    assert "link(s) or image(s) use http:// rather than https://" in result.output
    assert "Issue 1 (2025-W47): 10 sent, 0 failed, 0 pending" in result.output
    assert len(MemoryBackend.outbox) == 10


def test_dry_run_says_whether_the_real_send_would_pass_the_check(
    runner: CliRunner, env: dict[str, str], week: Database, settings: Settings
) -> None:
    add_http_story(week, settings)
    warned = runner.invoke(main, [*WEEK, "--dry-run"], env=env)
    assert warned.exit_code == 0, warned.output
    assert ("warning(s) and no error: a real send would go out and print the warnings."
            ) in warned.output
    plain_http = {**env, "DIGEST_BASE_URL": "http://news.example.org"}
    reputation = runner.invoke(main, [*WEEK, "--dry-run"], env=plain_http)
    assert reputation.exit_code == 1
    assert ("error(s): a real send would refuse and send nothing, unless given --ignore-check."
            ) in reputation.output
    overridden = runner.invoke(main, [*WEEK, "--dry-run", "--ignore-check"], env=plain_http)
    assert overridden.exit_code == 0, overridden.output
    assert "a real send with --ignore-check would go out anyway." in overridden.output
    broken = runner.invoke(main, [*WEEK, "--dry-run"], env={**env, "DIGEST_POSTAL_ADDRESS": ""})
    assert broken.exit_code == 1
    assert "a real send would refuse and send nothing." in broken.output
    assert counts(week) == (0, 0) and MemoryBackend.outbox == []


def test_dry_run_renders_and_counts_without_writing(
    runner: CliRunner, env: dict[str, str], week: Database
) -> None:
    seed_subscribers(week, 4, start=50, sections=["Tech"])
    result = runner.invoke(main, [*WEEK, "--dry-run"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        "Dry run: issue 1 (2025-W47) would go to 14 subscriber(s) in 2 variant(s); "
        "nothing was sent or written.\n"
    )
    assert "     10  all sections: “" in result.output
    assert "      4  Tech: “" in result.output
    assert counts(week) == (0, 0) and MemoryBackend.outbox == []


def test_to_sends_one_marked_test_copy_and_records_nothing(
    runner: CliRunner, env: dict[str, str], week: Database
) -> None:
    result = runner.invoke(main, [*WEEK, "--to", "editor@example.org"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output == "Sent a test copy of the 2025-W47 issue to editor@example.org.\n"
    [message] = MemoryBackend.outbox
    assert message.recipient == "editor@example.org"
    assert b"Subject: [TEST] " in message.data
    assert counts(week) == (0, 0)


def test_bad_rate_is_an_input_error(runner: CliRunner, env: dict[str, str]) -> None:
    result = runner.invoke(main, [*WEEK, "--rate", "fast"], env=env)
    assert result.exit_code == 1
    assert "rate 'fast' is not a rate; write it like 50/s" in result.output


def test_send_without_a_window_resumes_the_unfinished_issue(
    runner: CliRunner, env: dict[str, str], week: Database, settings: Settings
) -> None:
    window = send_window(settings)
    create_issue(week, settings, window, prepare(week, settings, window, check=False).content)
    result = runner.invoke(main, ["send"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output == "Issue 1 (2025-W47): 10 sent, 0 failed, 0 pending\n"


def test_issues_list_pause_resume_cancel(
    runner: CliRunner, env: dict[str, str], week: Database, settings: Settings
) -> None:
    window = send_window(settings)
    create_issue(week, settings, window, prepare(week, settings, window, check=False).content)
    listing = runner.invoke(main, ["issues"], env=env)
    assert listing.exit_code == 0, listing.output
    assert listing.output.splitlines()[1].split() == ["1", "2025-W47", "sending", "10", "0", "0",
                                                      "0"]

    paused = runner.invoke(main, ["issues", "pause", "2025-W47"], env=env)
    assert paused.exit_code == 0 and paused.output.startswith("Paused issue 1 (2025-W47).")
    twice = runner.invoke(main, ["issues", "pause", "1"], env=env)
    assert twice.exit_code == 1
    assert "issue 1 (2025-W47) is paused, not sending" in twice.output
    blocked = runner.invoke(main, WEEK, env=env)
    assert blocked.exit_code == 1
    assert "is paused; run `digest issues resume 2025-W47` first" in blocked.output
    assert runner.invoke(main, ["issues", "resume", "2025-W47"], env=env).exit_code == 0

    cancelled = runner.invoke(main, ["issues", "cancel", "2025-W47", "--yes"], env=env)
    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.output == "Cancelled issue 1 (2025-W47); 10 unsent deliveries skipped.\n"
    assert runner.invoke(main, WEEK, env=env).exit_code == 1
    assert MemoryBackend.outbox == []
    missing = runner.invoke(main, ["issues", "show", "2030-W01"], env=env)
    assert missing.exit_code == 1 and "no issue '2030-W01'" in missing.output


def test_a_second_sender_on_sqlite_names_the_first(
    runner: CliRunner, sqlite_url: str, env: dict[str, str], settings: Settings
) -> None:
    db = Database(sqlite_url)
    config = settings.replace(database_url=sqlite_url)
    window = send_window(config)
    seed_articles(db, window, 2)
    seed_subscribers(db, 3)
    issue, _ = create_issue(db, config, window, prepare(db, config, window, check=False).content)
    with db.write() as session:
        outbox.take_issue_lease(session, issue.id, "otherhost:777:z", now=utcnow(),
                                until=utcnow() + timedelta(minutes=5))
    result = runner.invoke(main, WEEK, env={**env, "DIGEST_DATABASE_URL": sqlite_url})
    assert result.exit_code == 1
    assert result.output == ("Error: another digest send (pid 777 on otherhost) is sending "
                             "issue 1 (2025-W47); exiting\n")
    assert MemoryBackend.outbox == []
    db.dispose()


def test_progress_line(capsys: pytest.CaptureFixture[str]) -> None:
    line = _ProgressLine()
    line(Progress(number=12, label="2025-W47", sent=1000, failed=3, pending=997, total=2000,
                  sent_now=500, elapsed=10.0))
    line.end()
    err = capsys.readouterr().err
    assert err.startswith("\rIssue 12 (2025-W47): 1003/2000 [##########----------] 1000 sent, "
                          "3 failed, 50.0 msg/s, ETA 0:00:19")
    assert err.endswith("\n")
