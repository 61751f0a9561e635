"""Send engine benchmark: outbox bookkeeping rows/s and end-to-end messages/s.

Phases, each on a fresh database with N active subscribers and one issue:

* create       INSERT … SELECT of N delivery rows (Message-IDs made by the database)
* bookkeeping  claim a batch (inflight + lease) and record it sent, N rows, no messages
* memory       the whole send loop (personalise, build MIME, tokens, claim/record) to the
               memory backend
* smtp         the same to an aiosmtpd server (tests/smtp_server.py) in another process, over
               smtp_connections loopback connections

Run from the repository root:
    .venv/bin/python bench/bench_send.py --subscribers 5000
    .venv/bin/python bench/bench_send.py --db-url postgresql+psycopg://postgres@127.0.0.1/bench
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, insert, text

from digest.config import Settings
from digest.db import Database
from digest.issues import Window, parse_week
from digest.mail.memory import MemoryBackend
from digest.models import Article, Subscriber, utcnow
from digest.sending import complete_outbox, create_issue, message_id_domain, prepare, send_issue
from digest.store import outbox

ROOT = Path(__file__).resolve().parent.parent


def fresh_database(url: str | None, folder: Path, name: str) -> str:
    """A URL to an empty database: a new SQLite file, or the given PostgreSQL one wiped."""
    if url is None:
        return f"sqlite:///{folder / (name + '.db')}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return url


def seed(db: Database, window: Window, subscribers: int, articles: int) -> None:
    """articles stories in window and subscribers active readers, in bulk inserts."""
    with db.write() as session:
        session.execute(insert(Article), [
            {"url": f"https://news.example.org/story-{i}", "title": f"Story number {i}",
             "section": ("World", "Tech", "Science")[i % 3],
             "published_at": window.start + timedelta(hours=i + 1),
             "dek": "A two-line standfirst that says what happened and why it matters.",
             "summary": "Summary."}
            for i in range(articles)
        ])
    for start in range(0, subscribers, 10_000):
        with db.write() as session:
            session.execute(insert(Subscriber), [
                {"email": f"reader{i}@example.com", "email_key": f"reader{i}@example.com",
                 "name": f"Reader {i}", "status": "active", "sections": []}
                for i in range(start, min(subscribers, start + 10_000))
            ])


def settings_for(url: str) -> Settings:
    return Settings(database_url=url, secret_key=("bench-secret-key-0123",),
                    postal_address="1 Example Street", base_url="https://news.example.org",
                    from_email="weekly@news.example.org")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def smtp_server() -> Iterator[int]:
    """An aiosmtpd test server in its own process (so it does not share our GIL)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.smtp_server", "--port", str(port)], cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the SMTP test server did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def timed(label: str, count: int, unit: str, action: Callable[[], object]) -> tuple[str, ...]:
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    row = (label, f"{count:,}", unit, f"{seconds:.2f}", f"{count / seconds:,.0f}")
    print(f"{label:<12} {count:>8,} {unit:<9} {seconds:7.2f} s {count / seconds:>10,.0f}/s",
          flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=5000)
    parser.add_argument("--articles", type=int, default=6)
    parser.add_argument("--db-url", help="PostgreSQL URL to use (wiped!); default SQLite files")
    parser.add_argument("--connections", type=int, default=2, help="smtp_connections")
    parser.add_argument("--skip-smtp", action="store_true")
    args = parser.parse_args()
    n = args.subscribers
    rows: list[tuple[str, ...]] = []

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)

        def setup(name: str) -> tuple[Database, Settings, Window]:
            url = fresh_database(args.db_url, folder, name)
            db = Database(url)
            settings = settings_for(url)
            window = parse_week("2025-W47", settings.tz)
            seed(db, window, n, args.articles)
            return db, settings, window

        # create + bookkeeping, store only
        db, settings, window = setup("bookkeeping")
        content = prepare(db, settings, window, check=False).content
        created: list[int] = []

        def create() -> None:
            issue, _ = create_issue(db, settings, window, content)
            complete_outbox(db, settings, issue.id)  # the rest of a large list (PostgreSQL)
            created.append(issue.id)

        rows.append(timed("create", n, "rows", create))
        issue_id = created[0]

        def bookkeeping() -> None:
            owner = "bench:1:x"
            while True:
                now = utcnow()
                with db.write() as session:
                    claimed = outbox.claim_batch(session, issue_id, owner,
                                                 limit=settings.send_inflight, now=now,
                                                 lease_until=now + timedelta(minutes=2))
                if not claimed:
                    return
                results = [outbox.ResultRow(c.id, "sent", 250, "250 OK") for c in claimed]
                with db.write() as session:
                    outbox.record_results(session, owner, results, now=utcnow())

        rows.append(timed("bookkeeping", n, "rows", bookkeeping))
        db.dispose()
        print(f"(Message-ID domain {message_id_domain(settings)})", flush=True)

        # whole loop to the memory backend
        db, settings, window = setup("memory")
        MemoryBackend.clear()

        def memory() -> None:
            summary = send_issue(db, settings, window, backend=MemoryBackend(), ignore_check=True)
            assert summary.counts.sent == n, summary
            MemoryBackend.clear()

        rows.append(timed("memory", n, "messages", memory))
        db.dispose()

        if not args.skip_smtp:
            db, settings, window = setup("smtp")
            with smtp_server() as port:
                config = settings.replace(backend="smtp", smtp_host="127.0.0.1", smtp_port=port,
                                          smtp_security="none",
                                          smtp_connections=args.connections)

                def smtp() -> None:
                    summary = send_issue(db, config, window, ignore_check=True)
                    assert summary.counts.sent == n, summary

                rows.append(timed("smtp", n, "messages", smtp))
            db.dispose()

    backend = "PostgreSQL" if args.db_url else "SQLite (WAL, file)"
    print()
    print(f"{backend}, {n:,} subscribers, {args.articles} articles, "
          f"send_inflight {Settings().send_inflight}, cpus {os.cpu_count()}")
    print("| phase | count | unit | seconds | per second |")
    print("|---|---:|---|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
