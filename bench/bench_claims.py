"""Claims per second with many delivery rows of finished issues in the table.

A claim is the outbox cycle one sender runs per batch: claim ``--batch`` rows (in flight,
with a lease, ``FOR UPDATE SKIP LOCKED``) in one transaction, record them sent in another.
It is measured on the current issue's pending rows, first with no old rows, then with
``--old`` rows of earlier, finished issues, each with the claim index as migration 0001
creates it and with the full (non-partial) index it replaced, so the ratio shows what the
partial index buys.

Run from the repository root:
    .venv/bin/python bench/bench_claims.py --db-url postgresql+psycopg://postgres@127.0.0.1/bench
    .venv/bin/python bench/bench_claims.py --old 20000 --claims 50        # SQLite, quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text

from bench.bench_send import fresh_database, seed, settings_for
from digest.db import Database
from digest.issues import parse_week
from digest.models import utcnow
from digest.sending import complete_outbox, create_issue, prepare
from digest.store import outbox

OWNER = "bench:1:claims"
# The claim index of migration 0001 is partial (unfinished rows only); FULL is the one it
# replaced, indexing every row of every issue.
FULL_INDEX = ("CREATE INDEX ix_deliveries_claim ON deliveries "
              "(issue_id, status, next_attempt_at, id)")


def add_old_rows(db: Database, old: int, per_issue: int) -> None:
    """old delivery rows in finished issues, per_issue rows each, made by INSERT … SELECT."""
    issues = max(1, old // per_issue)
    with db.write() as session:
        for n in range(issues):
            session.execute(text(
                "INSERT INTO issues (number, label, window_start, window_end, status, subject, "
                "preheader, intro, created_at, sent_at) VALUES (:n, :label, :start, :end, 'sent', "
                "'', '', '', :now, :now)"),
                {"n": 1000 + n, "label": f"old-{n}",
                 "start": utcnow() - timedelta(days=7 * n + 900),
                 "end": utcnow() - timedelta(days=7 * n + 893), "now": utcnow()})
        session.execute(text(
            "INSERT INTO deliveries (issue_id, subscriber_id, email, status, attempts, "
            "next_attempt_at, message_id, last_reply, sent_at) "
            "SELECT i.id, s.id, s.email, 'sent', 1, i.created_at, "
            "i.label || '.' || s.id || '@old.example.org', '250 OK', i.created_at "
            "FROM issues i CROSS JOIN subscribers s WHERE i.status = 'sent' AND s.id <= :per"),
            {"per": per_issue})
    with db.engine.begin() as conn:
        conn.execute(text("ANALYZE"))


def claims_per_second(db: Database, issue_id: int, claims: int,
                      batch: int) -> tuple[float, float]:
    """Run claims claim+record cycles: (cycles per second, median ms of the claim queries).

    The cycle includes two commits (fsync on PostgreSQL); the claim query time is what the
    index decides, so it is reported on its own.
    """
    query_ms = []
    started = time.perf_counter()
    for _ in range(claims):
        now = utcnow()
        with db.write() as session:
            t0 = time.perf_counter()
            rows = outbox.claim_batch(session, issue_id, OWNER, limit=batch, now=now,
                                      lease_until=now + timedelta(minutes=2))
            query_ms.append((time.perf_counter() - t0) * 1000)
        assert rows, "ran out of pending rows: seed more subscribers"
        with db.write() as session:
            outbox.record_results(session, OWNER, [
                outbox.ResultRow(r.id, "sent", 250, "250 OK") for r in rows
            ], now=utcnow())
    return claims / (time.perf_counter() - started), statistics.median(query_ms)


def run(url: str | None, *, old: int, claims: int, batch: int, repeats: int,
        folder: Path) -> list[tuple[str, float, float]]:
    """[(setting, claims/s, claim query ms)], medians, for: no old rows, then old rows with
    the partial and the full index."""
    subscribers = max(claims * batch * (3 * repeats + 1), 20_000)
    db_url = fresh_database(url, folder, "claims")
    db = Database(db_url)
    settings = settings_for(db_url)
    window = parse_week("2025-W47", settings.tz)
    seed(db, window, subscribers, 3)
    content = prepare(db, settings, window, check=False).content
    issue, _ = create_issue(db, settings, window, content)
    complete_outbox(db, settings, issue.id)  # PostgreSQL makes a large list's rest later
    out = []
    empty = [claims_per_second(db, issue.id, claims, batch) for _ in range(repeats)]
    out.append(("no old rows, partial index", *_medians(empty)))
    add_old_rows(db, old, min(old, subscribers))
    with db.engine.connect() as conn:
        definition = conn.execute(text(
            "SELECT sql FROM sqlite_master WHERE name = 'ix_deliveries_claim'"
            if db.is_sqlite else
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_deliveries_claim'"
        )).scalar_one()
    assert "WHERE" in definition, definition
    partial: list[tuple[float, float]] = []
    full: list[tuple[float, float]] = []
    for _ in range(repeats):
        # Interleaved, so load from other jobs on the machine hits both alike.
        partial.append(claims_per_second(db, issue.id, claims, batch))
        with db.engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_deliveries_claim"))
            conn.execute(text(FULL_INDEX))
        full.append(claims_per_second(db, issue.id, claims, batch))
        with db.engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_deliveries_claim"))
            conn.execute(text(definition))
    out.append((f"{old:,} old rows, partial index (0001)", *_medians(partial)))
    out.append((f"{old:,} old rows, full index", *_medians(full)))
    db.dispose()
    return out


def _medians(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r for r, _ in runs), statistics.median(q for _, q in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", help="PostgreSQL URL to use (wiped!); default SQLite")
    parser.add_argument("--old", type=int, default=1_000_000)
    parser.add_argument("--claims", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(args.db_url, old=args.old, claims=args.claims, batch=args.batch,
                   repeats=args.repeats, folder=Path(tmp))
    print("| table | claim+record cycles/s | ratio | claim queries, ms | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name, rate, ms in rows:
        print(f"| {name} | {rate:,.1f} | {rate / rows[0][1]:.2f} | {ms:.2f} | "
              f"{ms / rows[0][2]:.2f} |")


if __name__ == "__main__":
    main()
