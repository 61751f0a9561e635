"""The outbox queries stay index walks, so a send costs the same per message at any list size."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, update

from digest.config import Settings
from digest.db import Database
from digest.issues import freeze_issue, select_issue
from digest.models import Delivery, utcnow
from digest.store import outbox
from tests.conftest import seed_articles, seed_subscribers, send_window


def issue_with_300_rows(sqlite_url: str) -> tuple[Database, int, datetime]:
    """A frozen issue with 300 pending deliveries, all due now."""
    db = Database(sqlite_url)
    settings = Settings(database_url=sqlite_url)
    window = send_window(settings)
    seed_articles(db, window, 2)
    seed_subscribers(db, 300)
    now = utcnow()
    with db.write() as session:
        issue = freeze_issue(session, select_issue(session, settings, window))
        assert outbox.create_deliveries(session, issue.id, domain="example.org", now=now) == 300
    return db, issue.id, now


def claim_capturing(db: Database, issue_id: int, now: datetime
                    ) -> tuple[list[outbox.ClaimedDelivery], list[tuple[str, Any]]]:
    """Claim a batch of 32, and the SELECTs on deliveries it ran."""
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM deliveries" in statement:
            statements.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        with db.write() as session:
            rows = outbox.claim_batch(session, issue_id, "tester", limit=32, now=now,
                                      lease_until=now)
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    return rows, statements


def query_plan(db: Database, statement: str, parameters: Any) -> str:
    """SQLite's EXPLAIN QUERY PLAN for a captured statement, as one line."""
    with db.read() as session:
        return " ".join(
            row[3] for row in session.connection().exec_driver_sql(
                "EXPLAIN QUERY PLAN " + statement, parameters
            )
        )


def test_claiming_a_batch_never_scans_or_sorts_the_whole_outbox(sqlite_url: str) -> None:
    """Each claim reads at most a batch of rows through ix_deliveries_claim.

    A claim query that scanned the issue's deliveries and sorted them made sending 80,000
    subscribers three times slower per message than 5,000 (see BENCHMARKS.md).
    """
    db, issue_id, now = issue_with_300_rows(sqlite_url)
    rows, statements = claim_capturing(db, issue_id, now)
    assert len(rows) == 32 and [r.id for r in rows] == sorted(r.id for r in rows)
    assert statements, "claim_batch ran no SELECT on deliveries"
    for statement, parameters in statements:
        plan = query_plan(db, statement, parameters)
        assert "ix_deliveries_claim" in plan, plan
        assert "TEMP B-TREE" not in plan and "SCAN deliveries" not in plan, plan
    db.dispose()


def test_rows_of_later_waves_are_never_read_by_a_claim(sqlite_url: str) -> None:
    """deliver_at = "local 08:00": most rows are due hours later. The pending claim reads a
    range of ix_deliveries_claim that ends at now, so it never walks past them."""
    db, issue_id, now = issue_with_300_rows(sqlite_url)
    with db.write() as session:
        # All but the last ten rows belong to a wave 20 hours away.
        session.execute(update(Delivery).where(Delivery.id <= 290)
                        .values(next_attempt_at=now + timedelta(hours=20)))
    rows, statements = claim_capturing(db, issue_id, now)
    assert [r.id for r in rows] == list(range(291, 301))
    pending = [(s, p) for s, p in statements if "next_attempt_at <=" in s]
    assert len(pending) == 1
    plan = query_plan(db, *pending[0])
    assert "ix_deliveries_claim (issue_id=? AND status=? AND next_attempt_at<?)" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
    db.dispose()


def test_a_claim_cursor_never_loses_a_row_behind_it(db_url: str) -> None:
    """A sender on PostgreSQL walks on from its last claim (ClaimCursor); rows that fall
    behind it (given back unsent, or whose lease ran out) are still claimed, each once."""
    db, issue_id, now = issue_with_300_rows(db_url)
    cursor = outbox.ClaimCursor(timedelta(seconds=30))

    def claim(owner: str, at: datetime, limit: int, lease: timedelta,
              use: outbox.ClaimCursor | None) -> list[int]:
        with db.write() as session:
            return [r.id for r in outbox.claim_batch(
                session, issue_id, owner, limit=limit, now=at, lease_until=at + lease,
                cursor=use)]

    def sent(owner: str, ids: list[int], at: datetime) -> None:
        with db.write() as session:
            outbox.record_results(session, owner, [
                outbox.ResultRow(i, "sent", 250, "250 ok") for i in ids], now=at)

    first = claim("a", now, 100, timedelta(minutes=2), cursor)
    given_back = first[:5]
    with db.write() as session:
        outbox.unclaim(session, given_back, "a")  # back to pending, behind the cursor
    sent("a", first[5:], now)
    # Another sender claims 10 and dies: their lease has run out a second later.
    dead = claim("b", now, 10, timedelta(seconds=1), None)

    seen: list[int] = []
    for step in range(1, 20):
        at = now + timedelta(seconds=2 * step)
        batch = claim("a", at, 50, timedelta(minutes=2), cursor)
        if not batch:
            break
        seen += batch
        sent("a", batch, at)
    assert sorted(seen) == sorted(set(seen)), "a row was claimed twice"
    assert set(given_back) <= set(seen) and set(dead) <= set(seen)
    assert set(first[5:]) | set(seen) == set(range(min(first), min(first) + 300))
    with db.read() as session:
        assert outbox.counts(session, issue_id).sent == 300
    db.dispose()
