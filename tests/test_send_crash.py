"""`digest send` as real processes: SIGKILL mid-send, two senders at once, pause from outside."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from digest.cli import main
from digest.config import Settings
from digest.db import Database
from digest.models import Delivery, Issue
from tests.conftest import (
    digest_env,
    seed_articles,
    seed_subscribers,
    send_window,
    smtp_settings,
)
from tests.smtp_server import SMTPTestServer

Spawn = Callable[..., subprocess.Popen[bytes]]
SEND = ["send", "--week", "2025-W47", "--ignore-check"]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def finish(proc: subprocess.Popen[bytes], timeout: float = 60) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, (out + err).decode()


def message_ids_by_recipient(server: SMTPTestServer) -> dict[str, list[str | None]]:
    seen: dict[str, list[str | None]] = {}
    for message in server.messages:
        for rcpt in message.rcpt_tos:
            seen.setdefault(rcpt, []).append(message.message_id)
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("detect", ["dead pid", "lease expiry"])
def test_sigkill_mid_send_then_rerun_sends_the_rest_once(
    db: Database, settings: Settings, smtp_server: SMTPTestServer, digest_process: Spawn,
    detect: str,
) -> None:
    """Kill -9 after ~500 messages; the rerun completes the list.

    Every subscriber gets at least one message, at most send_inflight get two, and a second
    copy carries the same Message-ID as the first. The rerun learns the first sender is dead
    from its pid (same host) or, for a sender on another host, once its 2 s lease ran out.
    """
    window = send_window(settings)
    seed_articles(db, window, 2)
    emails = seed_subscribers(db, 1200)
    config = smtp_settings(settings, smtp_server, send_lease_seconds=2.0)
    env = digest_env(config)

    first = digest_process(SEND, env)
    wait_until(lambda: len(smtp_server.messages) >= 500 or first.poll() is not None, 60,
               "500 messages")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed_at = len(smtp_server.messages)
    assert first.returncode == -signal.SIGKILL, finish(first)
    assert 500 <= killed_at < 1200
    with db.read() as session:
        inflight = session.scalars(select(Delivery).where(Delivery.status == "inflight")).all()
    assert 0 < len(inflight) <= settings.send_inflight
    if detect == "lease expiry":
        # Make the dead sender look like one on another host: only its lease can free the rows.
        with db.write() as session:
            session.execute(update(Delivery).where(Delivery.status == "inflight")
                            .values(claimed_by="elsewhere:1:gone"))
            session.execute(update(Issue).where(Issue.lease_owner.is_not(None))
                            .values(lease_owner="elsewhere:1:gone"))

    rerun = digest_process(SEND, env)
    code, output = finish(rerun)
    assert code == 0, output
    assert "Issue 1 (2025-W47): 1200 sent, 0 failed, 0 pending" in output

    seen = message_ids_by_recipient(smtp_server)
    assert set(seen) == set(emails)
    duplicates = {rcpt: ids for rcpt, ids in seen.items() if len(ids) > 1}
    assert len(duplicates) <= settings.send_inflight
    assert all(len(ids) == 2 and ids[0] == ids[1] for ids in duplicates.values())
    with db.read() as session:
        rows = session.scalars(select(Delivery)).all()
    assert Counter(r.status for r in rows) == {"sent": 1200}
    assert {r.email: r.message_id for r in rows} == {k: v[0] for k, v in seen.items()}


@pytest.mark.slow
def test_two_senders_at_once_send_each_message_once(
    db: Database, settings: Settings, smtp_server: SMTPTestServer, digest_process: Spawn
) -> None:
    """A cron double-fire: two `digest send` processes on one issue still send N messages.

    On PostgreSQL both work, claiming side by side. On SQLite the second waits for the
    issue lease and then either finds the issue sent or names the sender holding it.
    """
    window = send_window(settings)
    seed_articles(db, window, 2)
    emails = seed_subscribers(db, 600)
    env = digest_env(smtp_settings(settings, smtp_server))
    procs = [digest_process(SEND, env) for _ in range(2)]
    results = [finish(p) for p in procs]

    assert sorted(r for m in smtp_server.messages for r in m.rcpt_tos) == sorted(emails)
    assert len(set(smtp_server.message_ids)) == 600
    for code, output in results:
        if code != 0:
            assert db.is_sqlite, output
            assert "another digest send (pid" in output and "is sending issue 1" in output
    with db.read() as session:
        rows = session.scalars(select(Delivery)).all()
        issue = session.scalars(select(Issue)).one()
    assert len(rows) == 600 and {r.status for r in rows} == {"sent"}
    assert issue.status == "sent" and issue.lease_owner is None
    if not db.is_sqlite:
        assert all(code == 0 for code, _ in results)
        senders = {r.claimed_by for r in rows}  # cleared after sending
        assert senders == {None}


@pytest.mark.slow
def test_pause_from_another_process_stops_the_sender_between_batches(
    db: Database, settings: Settings, smtp_server: SMTPTestServer, digest_process: Spawn,
    runner: CliRunner,
) -> None:
    """`digest issues pause` in one process; the sending process stops after its batch."""
    window = send_window(settings)
    seed_articles(db, window, 2)
    seed_subscribers(db, 400)
    config = smtp_settings(settings, smtp_server)
    sender = digest_process([*SEND, "--rate", "100/s"], digest_env(config))
    wait_until(lambda: len(smtp_server.messages) >= 40, 30, "40 messages")
    env: dict[str, Any] = {"DIGEST_DATABASE_URL": settings.database_url}
    result = runner.invoke(main, ["issues", "pause", "2025-W47"], env=env)
    assert result.exit_code == 0, result.output
    paused_at = len(smtp_server.messages)
    code, output = finish(sender)
    assert code == 0, output
    assert "Stopped: the issue was paused from another terminal." in output
    received = len(smtp_server.messages)
    assert received - paused_at <= 2 * settings.send_inflight and received < 400
    with db.read() as session:
        rows = session.scalars(select(Delivery)).all()
    assert Counter(r.status for r in rows) == {"sent": received, "pending": 400 - received}

    assert runner.invoke(main, ["issues", "resume", "2025-W47"], env=env).exit_code == 0
    code, output = finish(digest_process(SEND, digest_env(config)))
    assert code == 0 and "400 sent, 0 failed, 0 pending" in output, output
    assert len(smtp_server.messages) == 400 and len(set(smtp_server.message_ids)) == 400
