"""Queries for bounce and complaint events, and the deliveries they are about."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import ColumnElement, delete, func, or_, select
from sqlalchemy.orm import Session

from digest.models import BounceEvent, BounceKind, Delivery, DeliveryStatus, Issue


class EventRow(NamedTuple):
    """One event as ``digest bounces`` lists it."""

    received_at: datetime
    kind: str
    email: str
    issue_label: str | None
    status_code: str
    diagnostic: str
    action: str
    matched_by: str


def delivery(session: Session, delivery_id: int) -> Delivery | None:
    """The delivery with this id, if it still exists."""
    return session.get(Delivery, delivery_id)


def delivery_by_message_id(session: Session, message_ids: Sequence[str]) -> Delivery | None:
    """The first delivery whose Message-ID is one of these."""
    if not message_ids:
        return None
    return session.scalars(
        select(Delivery).where(Delivery.message_id.in_(list(message_ids)[:50])).limit(1)
    ).first()


def has_event(session: Session, fingerprint: str) -> bool:
    """True if a report with this fingerprint was already recorded."""
    found = session.scalar(select(BounceEvent.id).where(BounceEvent.fingerprint == fingerprint))
    return found is not None


def add_event(session: Session, event: BounceEvent) -> None:
    """Store one event (flushed, so later queries in the transaction see it)."""
    session.add(event)
    session.flush()


def soft_streak(session: Session, subscriber_id: int, since: datetime) -> int:
    """Soft bounces in a row for a subscriber since ``since``, one per delivery.

    "In a row" means no delivery in between got through: the streak counts the soft-bounced
    deliveries (and soft bounces tied to no delivery) newer than the newest sent delivery
    that drew no bounce at all and is older than the newest soft bounce.
    """
    events = session.execute(
        select(BounceEvent.id, BounceEvent.delivery_id, BounceEvent.received_at,
               Delivery.sent_at)
        .outerjoin(Delivery, Delivery.id == BounceEvent.delivery_id)
        .where(BounceEvent.subscriber_id == subscriber_id, BounceEvent.kind == BounceKind.SOFT,
               BounceEvent.received_at >= since)
    ).all()
    # Several reports about one delivery (a relay's retries) are one soft bounce.
    moments: dict[tuple[str, int], datetime] = {}
    for event_id, delivery_id, received, sent in events:
        key = ("delivery", delivery_id) if delivery_id is not None else ("event", event_id)
        moment = sent or received
        moments[key] = min(moment, moments.get(key, moment))
    if not moments:
        return 0
    newest = max(moments.values())
    bounced = select(BounceEvent.delivery_id).where(BounceEvent.delivery_id.is_not(None))
    clean_before = session.scalar(
        select(func.max(Delivery.sent_at)).where(
            Delivery.subscriber_id == subscriber_id, Delivery.status == DeliveryStatus.SENT,
            Delivery.sent_at >= since, Delivery.sent_at < newest, Delivery.id.not_in(bounced),
        )
    )
    return sum(1 for moment in moments.values() if clean_before is None or moment > clean_before)


def recent(session: Session, limit: int, kind: str | None = None) -> list[EventRow]:
    """The newest events, newest first."""
    query = (
        select(BounceEvent.received_at, BounceEvent.kind, BounceEvent.email, Issue.label,
               BounceEvent.status_code, BounceEvent.diagnostic, BounceEvent.action,
               BounceEvent.matched_by)
        .outerjoin(Issue, Issue.id == BounceEvent.issue_id)
        .order_by(BounceEvent.received_at.desc(), BounceEvent.id.desc())
        .limit(limit)
    )
    if kind is not None:
        query = query.where(BounceEvent.kind == kind)
    return [EventRow(*row) for row in session.execute(query)]


def counts_for_issue(session: Session, issue_id: int) -> dict[str, int]:
    """Events per kind for one issue."""
    rows = session.execute(
        select(BounceEvent.kind, func.count())
        .where(BounceEvent.issue_id == issue_id).group_by(BounceEvent.kind)
    )
    return {kind: int(n) for kind, n in rows}


def for_person(
    session: Session, subscriber_id: int | None, emails: Iterable[str]
) -> list[BounceEvent]:
    """One person's events, oldest first (for export-data)."""
    return list(session.scalars(
        select(BounceEvent).where(_person(subscriber_id, emails)).order_by(BounceEvent.id)
    ))


def scrub(session: Session, subscriber_id: int | None, emails: Iterable[str]) -> int:
    """Delete one person's events (erasure); return how many went."""
    result = session.execute(delete(BounceEvent).where(_person(subscriber_id, emails)))
    return int(getattr(result, "rowcount", 0))


def _person(subscriber_id: int | None, emails: Iterable[str]) -> ColumnElement[bool]:
    conditions: list[ColumnElement[bool]] = [BounceEvent.email.in_(list(emails))]
    if subscriber_id is not None:
        conditions.append(BounceEvent.subscriber_id == subscriber_id)
    return or_(*conditions)
