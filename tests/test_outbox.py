"""The outbox queries stay index walks, so a send costs the same per message at any list size."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from digest.config import Settings
from digest.db import Database
from digest.issues import freeze_issue, select_issue
from digest.models import utcnow
from digest.store import outbox
from tests.conftest import seed_articles, seed_subscribers, send_window


def test_claiming_a_batch_never_scans_or_sorts_the_whole_outbox(sqlite_url: str) -> None:
    """Each claim reads at most a batch of rows through ix_deliveries_claim.

    A claim query that scanned the issue's deliveries and sorted them made sending 80,000
    subscribers three times slower per message than 5,000 (see BENCHMARKS.md).
    """
    db = Database(sqlite_url)
    settings = Settings(database_url=sqlite_url)
    window = send_window(settings)
    seed_articles(db, window, 2)
    seed_subscribers(db, 300)
    now = utcnow()
    with db.write() as session:
        issue = freeze_issue(session, select_issue(session, settings, window))
        assert outbox.create_deliveries(session, issue.id, domain="example.org", now=now) == 300

    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM deliveries" in statement:
            statements.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        with db.write() as session:
            rows = outbox.claim_batch(session, issue.id, "tester", limit=32, now=now,
                                      lease_until=now)
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    assert len(rows) == 32 and [r.id for r in rows] == sorted(r.id for r in rows)
    assert statements, "claim_batch ran no SELECT on deliveries"
    with db.read() as session:
        for statement, parameters in statements:
            plan = " ".join(
                row[3] for row in session.connection().exec_driver_sql(
                    "EXPLAIN QUERY PLAN " + statement, parameters
                )
            )
            assert "ix_deliveries_claim" in plan, plan
            assert "TEMP B-TREE" not in plan and "SCAN deliveries" not in plan, plan
    db.dispose()
