"""`digest send --workers N` on PostgreSQL: every subscriber once, crash takeover, shared rate.

The senders are real `python -m digest send` processes (the parent starts its workers with
multiprocessing spawn); the mail goes to an aiosmtpd server on loopback that records each
message's recipients, Message-ID and arrival time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select

from digest.config import Settings
from digest.db import Database
from digest.models import Delivery, Issue
from tests.conftest import (
    POSTGRES_URL,
    digest_env,
    reset_postgres,
    seed_articles,
    seed_subscribers,
    send_window,
    skip_or_fail,
)

Spawn = Callable[..., subprocess.Popen[bytes]]
SEND = ["send", "--week", "2025-W47", "--ignore-check"]


@dataclass(frozen=True)
class Arrival:
    """One accepted message: when it arrived, to whom, and its Message-ID."""

    at: float
    rcpts: tuple[str, ...]
    message_id: str


class _Recorder:
    """aiosmtpd handler that accepts everything and records each message's arrival."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrivals: list[Arrival] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        headers = BytesHeaderParser().parsebytes(bytes(envelope.content or b""))
        message_id = str(headers.get("Message-ID", "")).strip("<> ")
        with self.lock:
            self.arrivals.append(Arrival(time.monotonic(), tuple(envelope.rcpt_tos), message_id))
        return "250 OK"

    def snapshot(self) -> list[Arrival]:
        with self.lock:
            return list(self.arrivals)


@dataclass
class Sink:
    host: str
    port: int
    recorder: _Recorder

    @property
    def arrivals(self) -> list[Arrival]:
        return self.recorder.snapshot()

    def by_recipient(self) -> dict[str, list[str]]:
        seen: dict[str, list[str]] = {}
        for arrival in self.arrivals:
            for rcpt in arrival.rcpts:
                seen.setdefault(rcpt, []).append(arrival.message_id)
        return seen


@pytest.fixture
def db_url() -> str:
    """Only PostgreSQL: these tests are about several senders, which SQLite does not allow."""
    if not POSTGRES_URL:
        skip_or_fail("set DIGEST_TEST_POSTGRES_URL to run the --workers tests")
    reset_postgres(POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture
def pg_db(db: Database) -> Database:
    """The migrated PostgreSQL test database."""
    return db


@pytest.fixture
def sink() -> Iterator[Sink]:
    recorder = _Recorder()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield Sink("127.0.0.1", port, recorder)
    finally:
        controller.stop()


def sink_env(settings: Settings, sink: Sink, **changes: Any) -> dict[str, str]:
    config = settings.replace(backend="smtp", smtp_host=sink.host, smtp_port=sink.port,
                              smtp_security="none", smtp_timeout=10.0, **changes)
    return digest_env(config, DIGEST_SMTP_CONNECTIONS="2")


def finish(proc: subprocess.Popen[bytes], timeout: float = 240) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, (out + err).decode()


def children(pid: int) -> list[int]:
    """The pids of a process's children (Linux /proc)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def all_sent(db: Database, count: int) -> None:
    with db.read() as session:
        rows = session.scalars(select(Delivery)).all()
        issue = session.scalars(select(Issue)).one()
    assert Counter(r.status for r in rows) == {"sent": count}
    assert issue.status == "sent"


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 4])
def test_workers_send_every_subscriber_exactly_once(
    pg_db: Database, settings: Settings, sink: Sink, digest_process: Spawn, workers: int
) -> None:
    """N worker processes share one issue: 5,000 messages, nobody twice, nobody missing."""
    window = send_window(settings)
    seed_articles(pg_db, window, 2)
    emails = seed_subscribers(pg_db, 5000)
    proc = digest_process([*SEND, "--workers", str(workers)], sink_env(settings, sink))
    code, output = finish(proc)
    assert code == 0, output
    assert "Issue 1 (2025-W47): 5000 sent, 0 failed, 0 pending" in output

    seen = sink.by_recipient()
    assert sorted(seen) == sorted(emails)
    assert all(len(ids) == 1 for ids in seen.values())
    assert len({a.message_id for a in sink.arrivals}) == 5000
    all_sent(pg_db, 5000)


@pytest.mark.slow
def test_a_killed_worker_has_its_batch_taken_over(
    pg_db: Database, settings: Settings, sink: Sink, digest_process: Spawn
) -> None:
    """SIGKILL the second of two workers mid-send: the first sends its claimed rows again.

    Only the rows the dead worker had in flight (at most send_inflight) can arrive twice,
    and a second copy carries the first one's Message-ID. The parent reports the dead
    worker and exits 1, with the issue complete.
    """
    window = send_window(settings)
    seed_articles(pg_db, window, 2)
    emails = seed_subscribers(pg_db, 5000)
    env = sink_env(settings, sink, send_lease_seconds=3.0)
    proc = digest_process([*SEND, "--workers", "2"], env)
    wait_until(lambda: len(sink.arrivals) >= 1000 or proc.poll() is not None, 120,
               "1,000 messages")
    workers = children(proc.pid)
    # digest send is worker 1 and starts worker 2; spawn also runs a resource tracker.
    senders = [pid for pid in workers
               if "resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_text()]
    assert len(senders) == 1, workers
    os.kill(senders[0], signal.SIGKILL)
    killed_at = len(sink.arrivals)
    code, output = finish(proc)
    assert killed_at < 5000, "the send ended before the kill; seed more subscribers"
    assert code == 1, output
    assert f"(pid {senders[0]}): exited with signal 9" in output
    assert "Issue 1 (2025-W47): 5000 sent, 0 failed, 0 pending" in output

    seen = sink.by_recipient()
    assert set(seen) == set(emails)
    twice = {rcpt: ids for rcpt, ids in seen.items() if len(ids) > 1}
    assert len(twice) <= settings.send_inflight
    assert all(len(ids) == 2 and ids[0] == ids[1] for ids in twice.values())
    all_sent(pg_db, 5000)


@pytest.mark.slow
def test_rate_limit_holds_for_the_issue_across_two_workers(
    pg_db: Database, settings: Settings, sink: Sink, digest_process: Spawn
) -> None:
    """--rate 40/s with two workers: the server sees 40 messages/s in all, within 5 %.

    Measured over 800 messages (20 s) from the 20th arrival on, so one early chunk or a
    worker starting late moves the figure by well under 1 %. The rate is far below what two
    workers reach on a loaded 2-core machine (~80/s with 8 test suites running), so the
    test measures the limiter, not the machine.
    """
    window = send_window(settings)
    seed_articles(pg_db, window, 2)
    seed_subscribers(pg_db, 800)
    proc = digest_process([*SEND, "--workers", "2", "--rate", "40/s"], sink_env(settings, sink))
    code, output = finish(proc)
    assert code == 0, output
    arrivals = sorted(a.at for a in sink.arrivals)
    assert len(arrivals) == 800
    first, last = arrivals[19], arrivals[-1]
    rate = (len(arrivals) - 20) / (last - first)
    assert 38 <= rate <= 42, f"{rate:.1f} messages/s"


def test_workers_on_sqlite_is_a_usage_error_naming_postgresql(
    tmp_path: Path, digest_process: Spawn
) -> None:
    """SQLite has one writer: --workers 2 exits 2 and says to use PostgreSQL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env["DIGEST_DATABASE_URL"] = f"sqlite:///{tmp_path / 'list.db'}"
    code, output = finish(digest_process([*SEND, "--workers", "2"], env))
    assert code == 2, output
    assert "--workers needs PostgreSQL" in output
    assert "postgresql+psycopg://" in output


def test_a_large_list_gets_its_first_rows_at_once_and_the_rest_even_after_a_crash(
    pg_db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue starts with its first HEAD_ROWS deliveries; the rest are never lost.

    create_issue alone is what a sender that died right after creating the issue leaves
    behind: the next send makes the missing rows (once) and delivers every subscriber.
    """
    from digest.mail.memory import MemoryBackend
    from digest.sending import control, create_issue, prepare, send_issue
    from digest.sending.control import HEAD_ROWS
    from digest.store import outbox

    monkeypatch.setattr(control, "REST_CHUNK", 200)  # the rest in three chunks
    window = send_window(settings)
    seed_articles(pg_db, window, 2)
    emails = seed_subscribers(pg_db, HEAD_ROWS + 500)
    content = prepare(pg_db, settings, window, check=False).content
    issue, created = create_issue(pg_db, settings, window, content)
    assert created
    with pg_db.read() as session:
        assert outbox.counts(session, issue.id).total == HEAD_ROWS
        assert outbox.expected_counts(session, issue.id).total == HEAD_ROWS + 500
    MemoryBackend.clear()
    summary = send_issue(pg_db, settings, window, backend=MemoryBackend(), ignore_check=True)
    assert summary.status == "sent" and summary.counts.sent == HEAD_ROWS + 500
    assert sorted(m.recipient for m in MemoryBackend.outbox) == sorted(emails)
    with pg_db.read() as session:
        row = session.get_one(Issue, issue.id)
        assert row.rest_from is None and row.rest_moment is None
    MemoryBackend.clear()
