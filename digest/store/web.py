"""Queries for the web app: fixed-window rate limits, webhook replay ids, the public archive."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from digest.models import Issue, IssueStatus, RateLimitHit, WebhookEvent


def _insert(session: Session) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def ping(session: Session) -> None:
    """Run a trivial query; raises if the database is unreachable."""
    session.execute(text("SELECT 1"))


def hit(session: Session, key: str, window_start: datetime) -> int:
    """Count one hit for key in the window starting at window_start; return the new count.

    One atomic upsert, so concurrent workers (threads, processes, hosts on PostgreSQL) all
    see the same count.
    """
    stmt = _insert(session)(RateLimitHit).values(key=key, window_start=window_start, count=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=["key", "window_start"], set_={"count": RateLimitHit.count + 1}
    ).returning(RateLimitHit.count)
    return int(session.execute(stmt).scalar_one())


def prune_rate_limits(session: Session, before: datetime) -> None:
    """Forget windows that started before ``before``."""
    session.execute(delete(RateLimitHit).where(RateLimitHit.window_start < before))


def record_event(session: Session, event_id: str, now: datetime) -> bool:
    """Remember a webhook event id; False if it was seen before (a replay)."""
    stmt = (
        _insert(session)(WebhookEvent)
        .values(event_id=event_id, received_at=now)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(WebhookEvent.event_id)
    )
    return session.execute(stmt).scalar_one_or_none() is not None


def prune_events(session: Session, before: datetime) -> None:
    """Forget event ids older than any signature that could still be accepted."""
    session.execute(delete(WebhookEvent).where(WebhookEvent.received_at < before))


def sent_issues(session: Session, limit: int = 500) -> list[Issue]:
    """Sent issues, newest first."""
    query = (
        select(Issue)
        .where(Issue.status == IssueStatus.SENT)
        .order_by(Issue.number.desc())
        .limit(limit)
    )
    return list(session.scalars(query))


def sent_issue(session: Session, label: str) -> Issue | None:
    """The sent issue with this label (e.g. 2025-W47), newest if several."""
    query = (
        select(Issue)
        .where(Issue.label == label, Issue.status == IssueStatus.SENT)
        .order_by(Issue.number.desc())
        .limit(1)
    )
    return session.scalar(query)
