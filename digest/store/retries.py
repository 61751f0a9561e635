"""Queries about unsuccessful deliveries: their replies grouped by reason, and the requeue.

A failed row is *retryable* when its cause was temporary or unknown (a 4xx reply that
outlived ``send_max_attempts``, a dropped connection, a backend that gave no code) and its
reader is still active. A 5xx reply is the server's final word about that message or
address, so it is never requeued, and neither is a reader who bounced, unsubscribed or was
erased since.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from digest.models import Delivery, DeliveryStatus, Subscriber, SubscriberStatus


def _retryable() -> ColumnElement[bool]:
    """The condition on a failed row that makes it retryable."""
    active = (
        select(Subscriber.id)
        .where(Subscriber.id == Delivery.subscriber_id,
               Subscriber.status == SubscriberStatus.ACTIVE)
        .exists()
    )
    return and_(
        Delivery.status == DeliveryStatus.FAILED,
        or_(Delivery.last_code.is_(None), Delivery.last_code.between(400, 499)),
        active,
    )


def reply_counts(session: Session, issue_id: int, status: str) -> list[tuple[int | None, str, int]]:
    """(code, reply, rows) for the issue's rows in status that have had an attempt."""
    rows = session.execute(
        select(Delivery.last_code, Delivery.last_reply, func.count())
        .where(Delivery.issue_id == issue_id, Delivery.status == status,
               Delivery.attempts > 0)
        .group_by(Delivery.last_code, Delivery.last_reply)
    )
    return [(code, reply or "", int(count)) for code, reply, count in rows]


def retryable_counts(session: Session, issue_ids: Sequence[int] | None = None) -> dict[int, int]:
    """Retryable failed rows per issue (issues without any are left out)."""
    query = select(Delivery.issue_id, func.count()).where(_retryable()).group_by(
        Delivery.issue_id
    )
    if issue_ids is not None:
        query = query.where(Delivery.issue_id.in_(issue_ids))
    return {issue_id: int(count) for issue_id, count in session.execute(query)}


def newest_with_retryable(session: Session) -> int | None:
    """The id of the newest issue that has retryable failed rows, if any."""
    return session.scalar(select(func.max(Delivery.issue_id)).where(_retryable()))


def requeue_failed(session: Session, issue_id: int, *, now: datetime) -> int:
    """Put the issue's retryable failed rows back in the queue with a fresh retry budget.

    They keep their Message-ID: a row whose connection dropped after the data may have been
    delivered, and the same Message-ID lets the receiver drop the second copy.
    """
    result = session.execute(
        update(Delivery)
        .where(Delivery.issue_id == issue_id, _retryable())
        .values(status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=now,
                claimed_by=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
