"""What digest send says and does about deliveries that did not go out.

Exit 4 when some still wait, the top reasons with their counts, ``--retry-failed`` for the
failures a retry could fix, and a sent issue with such failures not shown as done.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from digest.cli import main
from digest.config import Settings
from digest.db import Database
from digest.mail.memory import MemoryBackend
from digest.models import Delivery, Issue
from tests.conftest import seed_articles, seed_subscribers, send_window
from tests.smtp_server import SMTPTestServer

WEEK = ["send", "--week", "2025-W47"]


@pytest.fixture
def env(settings: Settings, smtp_server: SMTPTestServer) -> dict[str, str]:
    """digest send into the loopback SMTP server, giving up on a 4xx after one attempt."""
    return {
        "DIGEST_DATABASE_URL": settings.database_url,
        "DIGEST_SECRET_KEY": ",".join(settings.secret_key),
        "DIGEST_POSTAL_ADDRESS": settings.postal_address,
        "DIGEST_BASE_URL": settings.base_url,
        "DIGEST_FROM_EMAIL": settings.from_email,
        "DIGEST_BACKEND": "smtp",
        "DIGEST_SMTP_HOST": smtp_server.host,
        "DIGEST_SMTP_PORT": str(smtp_server.port),
        "DIGEST_SMTP_SECURITY": "none",
        "DIGEST_SEND_MAX_ATTEMPTS": "1",
    }


@pytest.fixture
def week(db: Database, settings: Settings) -> Database:
    seed_articles(db, send_window(settings), 2)
    seed_subscribers(db, 10)
    return db


def message_id_of(db: Database, email: str) -> str:
    with db.read() as session:
        return session.scalars(select(Delivery.message_id).where(Delivery.email == email)).one()


def test_a_run_that_leaves_rows_waiting_exits_4_with_the_reason(
    runner: CliRunner, env: dict[str, str], week: Database, smtp_server: SMTPTestServer
) -> None:
    """Every delivery deferred (a persistent 4xx): not exit 0, which means all sent."""
    for n in range(10):
        smtp_server.reply_to_rcpt(f"r{n}@example.com", "452 4.3.1 Insufficient system storage")
    result = runner.invoke(main, [*WEEK, "--quiet"], env={**env, "DIGEST_SEND_MAX_ATTEMPTS": "5"})
    assert result.exit_code == 4, result.output
    assert result.stdout.startswith("Issue 1 (2025-W47): 0 sent, 0 failed, 10 pending\n"
                                    "Waiting for a retry, top reasons:\n"
                                    "      10 × 452 4.3.1 Insufficient system storage\n")
    help_text = runner.invoke(main, ["send", "--help"]).output
    assert "4  nothing failed, but some deliveries wait for a retry" in help_text


def test_failures_are_listed_by_reason_and_the_fixable_ones_can_be_retried(
    runner: CliRunner, env: dict[str, str], week: Database, smtp_server: SMTPTestServer
) -> None:
    smtp_server.reply_to_rcpt("r1@example.com", "451 4.7.1 Greylisted, come back later")
    smtp_server.reply_to_rcpt("r2@example.com", "451 4.7.1 Greylisted, come back later")
    smtp_server.reply_to_rcpt("r3@example.com", "550 5.1.1 <r3@example.com>: User unknown")
    smtp_server.reply_to_rcpt("r4@example.com", "550 5.7.1 Message rejected as spam")
    first = runner.invoke(main, WEEK, env=env)
    assert first.exit_code == 3, first.output
    assert "Issue 1 (2025-W47): 6 sent, 4 failed, 0 pending" in first.output
    assert ("Failed, top reasons:\n"
            "       2 × 451 4.7.1 Greylisted, come back later\n") in first.output
    assert "       1 × 550 5.1.1 <address>: User unknown\n" in first.output
    assert "       1 × 550 5.7.1 Message rejected as spam\n" in first.output
    assert ("2 failed deliveries had a temporary or unknown cause; once it is fixed, run: "
            "digest send --retry-failed 2025-W47") in first.output

    # Not shown as done while a retry could still deliver some of it.
    listing = runner.invoke(main, ["issues"], env=env)
    assert listing.output.splitlines()[1].split()[:3] == ["1", "2025-W47", "incomplete"]
    assert "digest send --retry-failed 2025-W47" in listing.output
    show = runner.invoke(main, ["issues", "show", "2025-W47"], env=env)
    assert show.output.startswith("Issue 1 (2025-W47): incomplete\n")

    # The greylisting is over; r2 left the list meanwhile, r3 bounced, r4 was refused for good.
    removed = runner.invoke(main, ["subscribers", "remove", "r2@example.com"], env=env)
    assert removed.exit_code == 0
    original = message_id_of(week, "r1@example.com")
    smtp_server.reset()
    retry = runner.invoke(main, ["send", "--retry-failed", "2025-W47"], env=env)
    assert retry.exit_code == 3, retry.output  # r3 and r4 stay failed
    assert retry.output.startswith("Requeued 1 failed deliveries of issue 1 (2025-W47).\n")
    assert "Issue 1 (2025-W47): 7 sent, 3 failed, 0 pending" in retry.output
    assert [m.rcpt_tos for m in smtp_server.messages] == [("r1@example.com",)]
    # The same Message-ID: had the first attempt been delivered after all, it de-duplicates.
    assert smtp_server.message_ids == [original]

    again = runner.invoke(main, ["send", "--retry-failed"], env=env)
    assert again.exit_code == 1
    assert "no issue has failed deliveries that a retry could fix" in again.output
    listing = runner.invoke(main, ["issues"], env=env)
    assert listing.output.splitlines()[1].split()[:3] == ["1", "2025-W47", "sent"]
    assert len(smtp_server.messages) == 1


def test_retry_failed_of_an_issue_without_fixable_failures_sends_nothing(
    runner: CliRunner, env: dict[str, str], week: Database, smtp_server: SMTPTestServer
) -> None:
    smtp_server.reply_to_rcpt("r4@example.com", "554 5.7.1 Relay access denied")
    assert runner.invoke(main, WEEK, env=env).exit_code == 3
    smtp_server.reset()
    result = runner.invoke(main, ["send", "--retry-failed", "1"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Nothing to retry in issue 1 (2025-W47)")
    assert "5xx rejections, and readers who bounced or left, are never retried" in result.output
    assert smtp_server.messages == []


def test_a_missing_or_short_key_stops_the_send_before_anything_is_written(
    runner: CliRunner, env: dict[str, str], week: Database
) -> None:
    MemoryBackend.clear()
    memory = {**env, "DIGEST_BACKEND": "memory"}
    for key, expected in (("", "set DIGEST_SECRET_KEY to a long random string"),
                          ("x", "secret_key entry 1 of 1 is 1 character(s) long; each key must "
                                "be at least 16")):
        result = runner.invoke(main, WEEK, env={**memory, "DIGEST_SECRET_KEY": key})
        assert result.exit_code == 1, result.output
        assert expected in result.output
        assert "secrets.token_urlsafe(32)" in result.output and "digest demo" in result.output
        with week.read() as session:
            assert session.scalar(select(func.count()).select_from(Issue)) == 0
            assert session.scalar(select(func.count()).select_from(Delivery)) == 0
    assert MemoryBackend.outbox == []
