"""The send engine in-process against a real SMTP server: exactly once, retries, bounces, leases."""

from __future__ import annotations

import base64
import email
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from digest.config import Settings
from digest.db import Database
from digest.errors import CheckFailed, LockedError
from digest.mail.base import BackendConfigError, OutgoingMessage, SendResult
from digest.mail.memory import MemoryBackend
from digest.mail.smtp import SMTPBackend
from digest.models import Delivery, Issue, SendRate, Subscriber, Suppression, utcnow
from digest.ratelimit import RateLimiter, parse_rate
from digest.sending import (
    Sender,
    cancel_issue,
    create_issue,
    is_bounce,
    pause_issue,
    prepare,
    resume_issue,
    retry_delay,
    send_issue,
    worker_name,
)
from digest.store import outbox
from tests.conftest import seed_articles, seed_subscribers, send_window, smtp_settings
from tests.smtp_server import SMTPTestServer


def deliveries(db: Database) -> list[Delivery]:
    with db.read() as session:
        return list(session.scalars(select(Delivery).order_by(Delivery.id)))


def by_email(db: Database) -> dict[str, Delivery]:
    return {d.email: d for d in deliveries(db)}


def status_of(db: Database, email: str) -> str:
    with db.read() as session:
        return session.scalars(select(Subscriber.status).where(Subscriber.email == email)).one()


@pytest.fixture
def memory() -> MemoryBackend:
    MemoryBackend.clear()
    return MemoryBackend()


# ------------------------------------------------------------------------------ exactly once


def test_2000_subscribers_get_exactly_one_message_each(
    db: Database, settings: Settings, smtp_server: SMTPTestServer
) -> None:
    """2,000 active subscribers: 2,000 messages, 2,000 distinct Message-IDs, 2,000 sent rows."""
    window = send_window(settings)
    seed_articles(db, window, 2)
    emails = seed_subscribers(db, 2000)
    seed_subscribers(db, 5, start=5000, status="unsubscribed")
    summary = send_issue(db, smtp_settings(settings, smtp_server), window)

    assert summary.line == "Issue 1 (2025-W47): 2000 sent, 0 failed, 0 pending"
    assert summary.status == "sent" and summary.created and summary.exit_code == 0
    received = smtp_server.messages
    assert len(received) == 2000
    assert sorted(r for m in received for r in m.rcpt_tos) == sorted(emails)
    ids = [m.message_id for m in received]
    assert len(set(ids)) == 2000
    rows = deliveries(db)
    assert len(rows) == 2000 and {r.status for r in rows} == {"sent"}
    assert {r.message_id for r in rows} == set(ids)
    assert all(r.attempts == 1 and r.claimed_by is None and r.sent_at for r in rows)


def test_a_second_send_for_the_same_week_resumes_and_sends_nothing_twice(
    db: Database, settings: Settings, memory: MemoryBackend
) -> None:
    """The issue is unique per window: running send again finds it sent and does nothing."""
    window = send_window(settings)
    seed_articles(db, window, 2)
    seed_subscribers(db, 30)
    first = send_issue(db, settings, window, backend=memory)
    again = send_issue(db, settings, window, backend=MemoryBackend())
    assert first.created and not again.created
    assert again.issue_id == first.issue_id and again.sent_now == 0
    assert len(MemoryBackend.outbox) == 30
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Issue)) == 1


def test_two_processes_creating_the_same_issue_get_one(db: Database, settings: Settings) -> None:
    """Racing creators: the unique window constraint makes the loser re-read the winner's issue."""
    window = send_window(settings)
    seed_articles(db, window, 2)
    seed_subscribers(db, 50)
    content = prepare(db, settings, window, check=False).content
    results: list[Any] = []
    barrier = threading.Barrier(4)

    def create() -> None:
        barrier.wait()
        results.append(create_issue(db, settings, window, content))

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 4
    assert len({ref.id for ref, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert len(deliveries(db)) == 50


def test_message_ids_are_made_once_at_creation(db: Database, settings: Settings) -> None:
    """Every row has its own Message-ID before anything is sent, on the From domain."""
    window = send_window(settings)
    seed_articles(db, window, 2)
    seed_subscribers(db, 100)
    content = prepare(db, settings, window, check=False).content
    create_issue(db, settings, window, content)
    ids = [d.message_id for d in deliveries(db)]
    assert len(set(ids)) == 100
    # A random token for the issue, then the subscriber's id plus a random offset.
    assert all(re.fullmatch(r"[0-9a-f]{16}\.\d+@news\.example\.org", i) for i in ids), ids[:3]


# ------------------------------------------------------------------------------ failures


def test_421_and_disconnect_at_message_100_loses_and_repeats_nothing(
    db: Database, settings: Settings, smtp_server: SMTPTestServer
) -> None:
    """The server says 421 and hangs up at the 100th MAIL FROM; the sender reconnects."""
    window = send_window(settings)
    seed_articles(db, window, 2)
    emails = seed_subscribers(db, 250)
    smtp_server.disconnect_at(100)
    summary = send_issue(db, smtp_settings(settings, smtp_server, send_retry_base=0.2), window)
    assert summary.counts.sent == 250 and summary.status == "sent"
    received = smtp_server.messages
    assert sorted(r for m in received for r in m.rcpt_tos) == sorted(emails)
    assert len(set(smtp_server.message_ids)) == 250
    assert smtp_server.connections >= 3  # two pooled connections, plus the reconnect


def test_per_recipient_replies_are_classified(
    db: Database, settings: Settings, smtp_server: SMTPTestServer
) -> None:
    """550 5.1.1 fails and bounces; 450/452/552 retry later; a 550 policy refusal won't bounce."""
    window = send_window(settings)
    seed_articles(db, window, 2)
    seed_subscribers(db, 10)
    smtp_server.reply_to_rcpt("r1@example.com", "550 5.1.1 No such user here")
    smtp_server.reply_to_rcpt("r2@example.com", "450 4.2.1 Mailbox busy, try later")
    smtp_server.reply_to_rcpt("r3@example.com", "452 4.5.3 Too many recipients")
    # RFC 5321 §4.5.3.1.10: 552 at RCPT means "too many recipients", to be treated as 452.
    smtp_server.reply_to_rcpt("r4@example.com", "552 5.3.4 Too many recipients")
    smtp_server.reply_to_rcpt("r5@example.com", "550 5.7.1 Message refused by policy")
    before = utcnow()
    summary = send_issue(db, smtp_settings(settings, smtp_server), window)

    rows = by_email(db)
    assert rows["r1@example.com"].status == "failed" and rows["r1@example.com"].last_code == 550
    assert status_of(db, "r1@example.com") == "bounced"
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Suppression)) == 1
    for address in ("r2@example.com", "r3@example.com", "r4@example.com"):
        row = rows[address]
        assert row.status == "pending" and row.attempts == 1
        # send_retry_base is 600 s, ± 20 % jitter
        assert before + timedelta(seconds=470) < row.next_attempt_at < utcnow() + timedelta(
            seconds=730)
        assert "4." in row.last_reply or "552" in row.last_reply
    assert rows["r5@example.com"].status == "failed"
    assert status_of(db, "r5@example.com") == "active"
    assert summary.counts.sent == 5 and summary.counts.failed == 2
    assert summary.retry_count == 3 and summary.status == "sending" and summary.exit_code == 3
    assert summary.retry_note is not None and "3 deliveries will be retried after" in (
        summary.retry_note)
    assert len(smtp_server.messages) == 5


def test_reset_mid_data_is_retried_with_the_same_message_id(
    db: Database, settings: Settings, smtp_server: SMTPTestServer
) -> None:
    """A reset in the middle of DATA is temporary: retried (same Message-ID), delivered once.

    Whether the client had already written the final dot when the reset arrived decides who
    retries: the SMTP backend at once on a new connection, or the loop after send_retry_base.
    """
    window = send_window(settings)
    seed_articles(db, window, 2)
    seed_subscribers(db, 20)
    smtp_server.reset_during_data_at(5)
    summary = send_issue(db, smtp_settings(settings, smtp_server, send_retry_base=0.2), window)
    assert summary.counts.sent == 20 and summary.status == "sent"
    assert len(smtp_server.messages) == 20 and len(set(smtp_server.message_ids)) == 20
    assert smtp_server.transactions == 21  # the reset transaction, then its retry


def test_reset_after_the_final_dot_is_retried_later_with_the_same_message_id(
    db: Database, settings: Settings, smtp_server: SMTPTestServer
) -> None:
    """A reset after the dot may have delivered: temporary, retried by the loop, same Message-ID."""
    window = send_window(settings)
    seed_articles(db, window, 2)
    seed_subscribers(db, 20)
    smtp_server.fail_at(5, "end-of-data", reset=True)
    summary = send_issue(db, smtp_settings(settings, smtp_server, send_retry_base=0.3), window)
    assert summary.counts.sent == 20 and summary.status == "sent"
    ids = smtp_server.message_ids
    assert len(ids) == 21 and len(set(ids)) == 20  # the one duplicate kept its Message-ID
    retried = [d for d in deliveries(db) if d.attempts == 2]
    assert len(retried) == 1 and ids.count(retried[0].message_id) == 2


def test_temporary_failures_give_up_after_max_attempts(
    db: Database, settings: Settings, smtp_server: SMTPTestServer
) -> None:
    """A mailbox that stays busy fails after send_max_attempts tries, with backoff between."""
    window = send_window(settings)
    seed_articles(db, window, 2)
    seed_subscribers(db, 3)
    smtp_server.reply_to_rcpt("r0@example.com", "451 4.3.0 Try again later")
    summary = send_issue(
        db, smtp_settings(settings, smtp_server, send_retry_base=0.1, send_max_attempts=3),
        window, )
    row = by_email(db)["r0@example.com"]
    assert row.status == "failed" and row.attempts == 3
    assert row.last_reply.startswith("gave up after 3 attempts")
    assert summary.status == "sent" and summary.counts.failed == 1 and summary.exit_code == 3


def test_wrong_password_fails_fast_and_marks_nothing(
    db: Database, settings: Settings, smtp_server_factory: Any
) -> None:
    """AUTH refused: BackendConfigError within seconds, and no issue or delivery is written."""
    server = smtp_server_factory(auth=("ann", "right"))
    window = send_window(settings)
    seed_articles(db, window, 2)
    seed_subscribers(db, 10)
    config = smtp_settings(settings, server, smtp_username="ann", smtp_password="wrong")
    started = time.monotonic()
    with pytest.raises(BackendConfigError, match="authentication failed"):
        send_issue(db, config, window)
    assert time.monotonic() - started < 5
    assert deliveries(db) == []
    assert server.messages == []


def test_refused_connection_fails_fast(db: Database, settings: Settings) -> None:
    """Nothing listens on the port: a clear error naming host and port, no rows."""
    window = send_window(settings)
    seed_articles(db, window, 2)
    seed_subscribers(db, 3)
    config = settings.replace(backend="smtp", smtp_host="127.0.0.1", smtp_port=9,
                              smtp_security="none")
    with pytest.raises(BackendConfigError, match=r"127\.0\.0\.1:9\b"):
        send_issue(db, config, window)
    assert deliveries(db) == []


def test_check_errors_stop_the_send(
    db: Database, settings: Settings, memory: MemoryBackend
) -> None:
    """An empty issue does not go out; nothing is written."""
    window = send_window(settings)
    seed_subscribers(db, 3)
    with pytest.raises(CheckFailed, match="no articles"):
        send_issue(db, settings, window, backend=memory)
    assert deliveries(db) == [] and MemoryBackend.outbox == []


# ------------------------------------------------------------------------------ personalisation


def test_headers_personalisation_and_dkim_through_smtp(
    db: Database, settings: Settings, smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    """Each message carries its row's Message-ID, the reader's links, and a valid DKIM signature."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    import dkim

    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                   capture_output=True)
    public = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
                            check=True, capture_output=True).stdout
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == b"sel._domainkey.news.example.org." else None

    window = send_window(settings)
    seed_articles(db, window, 2)
    seed_subscribers(db, 3)
    config = smtp_settings(settings, smtp_server, dkim_domain="news.example.org",
                           dkim_selector="sel", dkim_private_key=str(key))
    send_issue(db, config, window)
    rows = by_email(db)
    assert len(smtp_server.messages) == 3
    for received in smtp_server.messages:
        message = email.message_from_bytes(received.data, policy=default_policy)
        row = rows[received.rcpt_tos[0]]
        assert message["Message-ID"] == f"<{row.message_id}>"
        assert message["To"].addresses[0].addr_spec == row.email
        assert message["List-Unsubscribe"].startswith("<https://news.example.org/")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["Subject"] and message["Date"]
        text = message.get_body(("plain",))
        assert text is not None and "/archive/2025-W47" in text.get_content()
        assert dkim.verify(received.data, dnsfunc=dns)


def test_one_template_per_section_variant_and_skips(
    db: Database, settings: Settings, memory: MemoryBackend
) -> None:
    """Section choices share compiled variants; an empty variant and a leaver are skipped."""
    window = send_window(settings)
    seed_articles(db, window, 4, sections=("World", "Tech"))
    seed_subscribers(db, 20)
    seed_subscribers(db, 20, start=100, sections=["Tech"])
    seed_subscribers(db, 5, start=200, sections=["Sport"])  # nothing for them this week
    seed_subscribers(db, 3, start=300, sections=["tech"])
    content = prepare(db, settings, window, check=False).content
    issue, _ = create_issue(db, settings, window, content)
    with db.write() as session:
        session.execute(update(Subscriber).where(Subscriber.email == "r1@example.com")
                        .values(status="unsubscribed"))
    sender = Sender(db, settings, memory)
    with memory:
        summary = sender.run(issue)
    assert summary.counts.sent == 42 and summary.counts.skipped == 6
    rows = by_email(db)
    assert rows["r1@example.com"].last_reply == "subscriber is unsubscribed"
    assert rows["r200@example.com"].status == "skipped"
    assert "no articles in the reader's sections" in rows["r200@example.com"].last_reply
    # all sections, Tech only (shared by "Tech" and "tech"), and the empty choice
    assert len(sender._templates) == 3
    assert sender.renderer.mjml_compiles <= 6
    tech_readers = {f"r{i}@example.com" for i in range(100, 120)}
    tech = [m for m in MemoryBackend.outbox if m.recipient in tech_readers]
    everyone = [m for m in MemoryBackend.outbox if m.recipient == "r0@example.com"]
    assert len(tech) == 20 and len(everyone) == 1
    assert b"Story 0 of" in everyone[0].data  # the World story…
    assert all(b"Story 0 of" not in m.data for m in tech)  # …is not in the Tech variant


# ------------------------------------------------------------------------------ leases, crash


def claim_for(db: Database, issue_id: int, owner: str, count: int, lease: float) -> list[int]:
    now = utcnow()
    with db.write() as session:
        rows = outbox.claim_batch(session, issue_id, owner, limit=count, now=now,
                                  lease_until=now + timedelta(seconds=lease))
    return [r.id for r in rows]


def test_expired_leases_are_resent_live_ones_are_not(
    db: Database, settings: Settings, memory: MemoryBackend
) -> None:
    """Rows in flight for a sender on another host: re-sent once its lease ran out, not before."""
    window = send_window(settings)
    seed_articles(db, window, 2)
    seed_subscribers(db, 40)
    content = prepare(db, settings, window, check=False).content
    issue, _ = create_issue(db, settings, window, content)
    live = claim_for(db, issue.id, "elsewhere:4243:b", 5, lease=600)
    dead = claim_for(db, issue.id, "elsewhere:4242:a", 10, lease=-1)  # already expired
    with memory:
        summary = Sender(db, settings, memory).run(issue)
    sent_ids = {m.message_id for m in MemoryBackend.outbox}
    rows = {d.id: d for d in deliveries(db)}
    assert all(rows[i].status == "sent" and rows[i].attempts == 2 for i in dead)
    assert all(rows[i].status == "inflight" and rows[i].message_id not in sent_ids for i in live)
    assert summary.counts.sent == 35 and summary.counts.inflight == 5
    assert summary.status == "sending"


def test_rows_of_a_dead_sender_on_this_host_are_resent_at_once(
    db: Database, settings: Settings, memory: MemoryBackend
) -> None:
    """No need to wait for the lease when the owner's pid is gone from this host."""
    window = send_window(settings)
    seed_articles(db, window, 2)
    seed_subscribers(db, 10)
    content = prepare(db, settings, window, check=False).content
    issue, _ = create_issue(db, settings, window, content)
    proc = subprocess.Popen(["true"])
    proc.wait()
    host = worker_name().split(":")[0]
    claim_for(db, issue.id, f"{host}:{proc.pid}:x", 4, lease=600)
    with memory:
        summary = Sender(db, settings, memory).run(issue)
    assert summary.counts.sent == 10 and summary.status == "sent"


def test_sqlite_second_sender_waits_then_names_the_holder(sqlite_url: str, settings: Settings,
                                                          memory: MemoryBackend) -> None:
    """On SQLite one sender holds the issue lease; another gives up with a clear message."""
    db = Database(sqlite_url)
    config = settings.replace(database_url=sqlite_url)
    window = send_window(config)
    seed_articles(db, window, 2)
    seed_subscribers(db, 5)
    content = prepare(db, config, window, check=False).content
    issue, _ = create_issue(db, config, window, content)
    with db.write() as session:
        assert outbox.take_issue_lease(session, issue.id, "otherhost:777:z", now=utcnow(),
                                       until=utcnow() + timedelta(seconds=60))
    started = time.monotonic()
    with pytest.raises(LockedError, match=r"another digest send \(pid 777 on otherhost\) is "
                                          r"sending issue 1 \(2025-W47\); exiting"):
        Sender(db, config, memory, lock_wait=0.5).run(issue)
    assert time.monotonic() - started < 3
    assert MemoryBackend.outbox == []
    assert {d.status for d in deliveries(db)} == {"pending"}
    db.dispose()


class _Crashing(MemoryBackend):
    """Accepts the first batch, then dies in the middle of the second."""

    calls = 0

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        type(self).calls += 1
        if type(self).calls == 2:
            raise KeyboardInterrupt
        return super().send_messages(messages)


def test_interrupted_batch_keeps_results_and_frees_the_rest(
    db: Database, settings: Settings, memory: MemoryBackend
) -> None:
    """Ctrl-C mid-batch: earlier batches stay sent, the interrupted one is re-sent next run.

    Batches are half of send_inflight (one on the wire, the next one claimed); the batch
    claimed next but never handed over goes back to pending.
    """
    window = send_window(settings)
    seed_articles(db, window, 2)
    seed_subscribers(db, 100)
    config = settings.replace(send_inflight=64)
    _Crashing.calls = 0
    with pytest.raises(KeyboardInterrupt):
        send_issue(db, config, window, backend=_Crashing())
    counts = {s: sum(1 for d in deliveries(db) if d.status == s) for s in ("sent", "inflight")}
    assert counts == {"sent": 32, "inflight": 32}
    assert sum(1 for d in deliveries(db) if d.status == "pending" and d.attempts == 0) == 36
    summary = send_issue(db, config, window, backend=MemoryBackend(), ignore_check=True)
    assert summary.counts.sent == 100 and summary.status == "sent"
    assert len(MemoryBackend.outbox) == 100


# ------------------------------------------------------------------------------ control


class _Slow(MemoryBackend):
    """Pauses a little per batch so another thread can act between batches."""

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        time.sleep(0.05)
        return super().send_messages(messages)


def test_pause_resume_and_cancel_stop_the_loop_between_batches(
    db: Database, settings: Settings, memory: MemoryBackend
) -> None:
    """Pause stops after the current batch; resume continues; cancel skips what is left."""
    window = send_window(settings)
    seed_articles(db, window, 2)
    seed_subscribers(db, 300)
    config = settings.replace(send_inflight=10)

    def pause_soon() -> None:
        deadline = time.monotonic() + 20
        while len(MemoryBackend.outbox) < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
        pause_issue(db, "2025-W47")

    thread = threading.Thread(target=pause_soon)
    thread.start()
    paused = send_issue(db, config, window, backend=_Slow())
    thread.join()
    assert paused.stopped == "paused" and paused.status == "paused"
    assert 30 <= paused.counts.sent <= 60 and paused.counts.inflight == 0
    assert send_issue(db, config, window, backend=_Slow()).sent_now == 0

    resume_issue(db, "2025-W47")

    def cancel_soon() -> None:
        deadline = time.monotonic() + 20
        while len(MemoryBackend.outbox) < 120 and time.monotonic() < deadline:
            time.sleep(0.01)
        cancel_issue(db, "1")

    thread = threading.Thread(target=cancel_soon)
    thread.start()
    cancelled = send_issue(db, config, window, backend=_Slow())
    thread.join()
    assert cancelled.stopped == "cancelled" and cancelled.status == "cancelled"
    c = cancelled.counts
    assert c.sent + c.skipped == 300 and c.pending == 0 and c.inflight == 0
    assert len(MemoryBackend.outbox) == c.sent
    assert len({m.message_id for m in MemoryBackend.outbox}) == c.sent


# ------------------------------------------------------------------------------ rate, helpers


@pytest.mark.slow
def test_rate_50_per_second_over_500_messages(
    sqlite_url: str, smtp_server: SMTPTestServer
) -> None:
    """--rate 50/s: the measured rate of 500 messages handed to SMTP stays within 5 % of 50/s."""
    db = Database(sqlite_url)
    config = smtp_settings(Settings(database_url=sqlite_url, secret_key=("rate-test-secret-key",),
                                    postal_address="1 Example Street",
                                    base_url="https://news.example.org"), smtp_server)
    window = send_window(config)
    seed_articles(db, window, 2)
    seed_subscribers(db, 500)
    stamps: list[float] = []

    class Timed(SMTPBackend):
        def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
            results = super().send_messages(messages)
            stamps.extend([time.monotonic()] * len(messages))
            return results

    backend = Timed.from_settings(config)
    summary = send_issue(db, config, window, backend=backend, rate=50.0)
    assert summary.counts.sent == 500 and len(smtp_server.messages) == 500
    measured = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    print(f"measured {measured:.2f} messages/s")
    assert measured <= 50 * 1.05, measured
    assert measured >= 50 * 0.8, measured  # and not needlessly slow
    db.dispose()


def test_shared_bucket_holds_the_rate_across_senders(db: Database) -> None:
    """Two limiters on one bucket (two processes) together take rate·t + burst tokens at most."""
    clock = [utcnow()]
    waits: list[float] = []

    def now() -> Any:
        return clock[0]

    def sleep(seconds: float) -> None:
        waits.append(seconds)

    a = RateLimiter(db, 100, now=now, sleep=sleep)
    b = RateLimiter(db, 100, now=now, sleep=sleep)
    assert a.chunk == 10
    a.reset()
    # Both reserve 10 at the same instant 30 times: 600 tokens need ~6 s at 100/s.
    for _ in range(30):
        a.acquire(10)
        b.acquire(10)
    assert max(waits) == pytest.approx(6.0, abs=0.01)
    clock[0] += timedelta(seconds=60)
    waits.clear()
    a.acquire(10)  # refilled, but only up to one chunk
    assert waits == []
    b.acquire(10)
    assert waits == [pytest.approx(0.1)]
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(SendRate)) == 1


@pytest.mark.parametrize(("text", "rate"), [("50/s", 50.0), ("50", 50.0), ("3000/min", 50.0),
                                            ("36000/h", 10.0), ("2.5/s", 2.5)])
def test_parse_rate(text: str, rate: float) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize(
    ("code", "text", "bounce"),
    [
        (550, "5.1.1 <x@example.com>: Recipient address rejected: User unknown", True),
        (550, "5.1.10 Null MX", True),
        (550, "5.7.1 Message rejected as spam", False),
        (550, "5.1.8 Sender address rejected", False),  # the sender's problem, not the reader's
        (550, "Requested action not taken: mailbox unavailable", True),
        (550, "Rejected by policy", False),
        (551, "User not local", True),
        (553, "Mailbox name not allowed", True),
        (554, "5.1.1 Transaction failed", False),
        (450, "4.1.1 try later", False),
    ],
)
def test_bounce_classification(code: int, text: str, bounce: bool) -> None:
    assert is_bounce(code, text) is bounce


def test_retry_delay_doubles_with_jitter(settings: Settings) -> None:
    config = settings.replace(send_retry_base=100.0)
    for attempts, base in ((1, 100), (2, 200), (3, 400), (5, 1600)):
        for _ in range(20):
            assert base * 0.8 <= retry_delay(config, attempts) <= base * 1.2
