"""Queries for subscribers, suppressions and a subscriber's deliveries."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from digest.models import Delivery, DeliveryStatus, Issue, Subscriber, SubscriberStatus, Suppression

#: Statuses of people who left; nothing but they themselves may bring them back.
LEFT = (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED)
JOINED = (SubscriberStatus.ACTIVE, SubscriberStatus.PENDING)

# Bound parameters per IN (...) query: below SQLite's old 999-variable limit.
_IN_CHUNK = 900


class SubscriberRow(NamedTuple):
    """What the send loop needs about one active subscriber, detached from any session."""

    id: int
    email: str
    email_key: str
    name: str
    sections: list[str]


def _insert(session: Session) -> Any:
    """The dialect's INSERT construct (both offer on_conflict_do_update/do_nothing)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def get(session: Session, subscriber_id: int, *, for_update: bool = False) -> Subscriber | None:
    """The subscriber with this id, optionally locked until the transaction ends."""
    query = select(Subscriber).where(Subscriber.id == subscriber_id)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def get_by_key(session: Session, email_key: str, *, for_update: bool = False) -> Subscriber | None:
    """The subscriber with this lower-cased address, optionally locked (no-op on SQLite)."""
    query = select(Subscriber).where(Subscriber.email_key == email_key)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def count(session: Session, status: str | None = None) -> int:
    """Number of subscribers, optionally with one status."""
    query = select(func.count()).select_from(Subscriber)
    if status is not None:
        query = query.where(Subscriber.status == status)
    return int(session.scalar(query) or 0)


def page(
    session: Session, after_id: int, limit: int, status: str | None = None
) -> list[Subscriber]:
    """Up to limit subscribers with id > after_id, in id order (keyset pagination)."""
    query = select(Subscriber).where(Subscriber.id > after_id)
    if status is not None:
        query = query.where(Subscriber.status == status)
    return list(session.scalars(query.order_by(Subscriber.id).limit(limit)))


def iter_all(
    session: Session, status: str | None = None, batch: int = 1000
) -> Iterator[Subscriber]:
    """Every subscriber (optionally of one status) in id order, batch by batch."""
    after = 0
    while True:
        rows = page(session, after, batch, status)
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1].id
        session.expunge_all()  # keep memory flat on very long lists


def active_batches(session: Session, after_id: int, limit: int) -> list[SubscriberRow]:
    """The next limit active subscribers with id > after_id, in id order.

    Keyset pagination: the caller passes the last id it saw, so the whole list is never
    loaded and rows added or removed meanwhile do not shift the pages.
    """
    query = (
        select(
            Subscriber.id, Subscriber.email, Subscriber.email_key, Subscriber.name,
            Subscriber.sections,
        )
        .where(Subscriber.status == SubscriberStatus.ACTIVE, Subscriber.id > after_id)
        .order_by(Subscriber.id)
        .limit(limit)
    )
    return [SubscriberRow(r.id, r.email, r.email_key, r.name, list(r.sections or ()))
            for r in session.execute(query)]


def iter_active(session: Session, batch_size: int = 1000) -> Iterator[list[SubscriberRow]]:
    """Every active subscriber as successive batches from :func:`active_batches`."""
    after = 0
    while True:
        rows = active_batches(session, after, batch_size)
        if rows:
            yield rows
        if len(rows) < batch_size:
            return
        after = rows[-1].id


def insert_pending(session: Session, values: Mapping[str, Any]) -> Subscriber | None:
    """Insert a new subscriber; None if the address exists already (a concurrent insert)."""
    stmt = (
        _insert(session)(Subscriber)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["email_key"])
        .returning(Subscriber.id)
    )
    new_id = session.execute(stmt).scalar_one_or_none()
    return None if new_id is None else get(session, new_id)


class ImportRow(NamedTuple):
    """One validated import row (sections already resolved; status may be empty)."""

    email: str
    email_key: str
    name: str
    sections: list[str]
    status: str
    timezone: str = ""


_LEFT_SQL = "(" + ", ".join(f"'{s.value}'" for s in LEFT) + ")"
_JOINED_SQL = "(" + ", ".join(f"'{s.value}'" for s in JOINED) + ")"
_UPSERT_COLUMNS = ("email", "email_key", "name", "sections", "status", "consent_source",
                   "created_at", "updated_at", "unsubscribed_at", "timezone")


def _upsert_sql(columns: Iterable[str], set_status: bool, source_sql: str) -> str:
    changes = ["email = excluded.email", "updated_at = excluded.updated_at"]
    changes += [f"{c} = excluded.{c}" for c in columns if c in ("name", "sections", "timezone")]
    if set_status:
        # Nobody who left is made active or pending again by an import.
        changes.append(
            f"status = CASE WHEN subscribers.status IN {_LEFT_SQL} AND excluded.status IN "
            f"{_JOINED_SQL} THEN subscribers.status ELSE excluded.status END"
        )
        changes.append(
            f"unsubscribed_at = CASE WHEN excluded.status IN {_LEFT_SQL} AND subscribers.status "
            f"NOT IN {_LEFT_SQL} THEN excluded.unsubscribed_at ELSE subscribers.unsubscribed_at END"
        )
    return (
        f"INSERT INTO subscribers ({', '.join(_UPSERT_COLUMNS)}) {source_sql} "
        f"ON CONFLICT (email_key) DO UPDATE SET {', '.join(changes)}"
    )


def upsert_many(
    session: Session,
    rows: Sequence[ImportRow],
    *,
    columns: Iterable[str],
    set_status: bool,
    source: str,
    now: datetime,
) -> None:
    """Insert rows, or update the subscriber with the same email_key, in one statement per batch.

    ``columns`` names the optional fields the import file had (name, sections, timezone); only those
    overwrite existing rows. With ``set_status`` an existing row takes the row's status,
    except that nobody who left (unsubscribed, bounced, complained) is made active or pending
    again; without it, new rows are active and existing rows keep their status.

    Hand-written SQL (the same upsert syntax on both databases): SQLite gets one executemany,
    PostgreSQL one INSERT ... SELECT FROM unnest(arrays); per-row ORM or Core parameter
    processing costs more than the database work at 100,000 rows.
    """
    if not rows:
        return
    columns = tuple(columns)
    table = Subscriber.__table__
    connection = session.connection()
    dialect = connection.dialect
    left = {s.value for s in LEFT}
    if dialect.name == "postgresql":
        sql = _upsert_sql(
            columns, set_status,
            "SELECT e, k, n, CAST(s AS json), st, :source, :now, :now, "
            "CASE WHEN st IN ('unsubscribed', 'bounced', 'complained') "
            "THEN CAST(:now AS timestamptz) END, z "
            "FROM unnest(CAST(:emails AS text[]), CAST(:keys AS text[]), "
            "CAST(:names AS text[]), CAST(:sections AS text[]), CAST(:statuses AS text[]), "
            "CAST(:zones AS text[])) AS t(e, k, n, s, st, z)",
        )
        session.execute(text(sql), {
            "source": source, "now": now,
            "emails": [r.email for r in rows], "keys": [r.email_key for r in rows],
            "names": [r.name for r in rows],
            "sections": [json.dumps(r.sections) for r in rows],
            "statuses": [r.status or SubscriberStatus.ACTIVE.value for r in rows],
            "zones": [r.timezone for r in rows],
        })
        return
    to_db = table.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)
    now_db = to_db(now) if to_db is not None else now
    dumped: dict[tuple[str, ...], str] = {}  # lists repeat a handful of section choices

    def sections_json(sections: list[str]) -> str:
        key = tuple(sections)
        value = dumped.get(key)
        if value is None:
            value = dumped[key] = json.dumps(sections)
        return value

    params = [
        (r.email, r.email_key, r.name, sections_json(r.sections),
         r.status or SubscriberStatus.ACTIVE.value, source, now_db, now_db,
         now_db if r.status in left else None, r.timezone)
        for r in rows
    ]
    sql = _upsert_sql(columns, set_status, "VALUES (" + ", ".join("?" * len(_UPSERT_COLUMNS)) + ")")
    connection.exec_driver_sql(sql, params)


def delete_subscriber(session: Session, subscriber: Subscriber) -> None:
    """Delete one subscriber; their delivery rows keep a NULL subscriber_id."""
    session.execute(delete(Subscriber).where(Subscriber.id == subscriber.id))
    session.expunge(subscriber)


def suppression(session: Session, email_hash: str) -> Suppression | None:
    """The suppression entry for an address hash, if any."""
    return session.get(Suppression, email_hash)


def has_suppressions(session: Session) -> bool:
    """True if the suppression list has any entry."""
    return session.scalar(select(Suppression.email_hash).limit(1)) is not None


def suppressed_among(session: Session, hashes: Sequence[str]) -> set[str]:
    """Which of these address hashes are suppressed."""
    found: set[str] = set()
    for start in range(0, len(hashes), _IN_CHUNK):
        chunk = hashes[start : start + _IN_CHUNK]
        found.update(
            session.scalars(select(Suppression.email_hash).where(Suppression.email_hash.in_(chunk)))
        )
    return found


def add_suppressions(session: Session, entries: Sequence[tuple[str, str]], now: datetime) -> None:
    """Record (hash, reason) suppressions; an existing entry keeps its first reason."""
    if not entries:
        return
    stmt = _insert(session)(Suppression).on_conflict_do_nothing(index_elements=["email_hash"])
    session.execute(
        stmt, [{"email_hash": h, "reason": reason, "created_at": now} for h, reason in entries]
    )


def remove_suppression(session: Session, email_hash: str) -> bool:
    """Delete a suppression entry; True if there was one."""
    result = session.execute(delete(Suppression).where(Suppression.email_hash == email_hash))
    return bool(getattr(result, "rowcount", 0))


def _delivery_filter(subscriber_id: int | None, emails: Iterable[str]) -> ColumnElement[bool]:
    # Deliveries keep the address they were sent to; after a `remove` they have lost the
    # subscriber id, so match on both.
    condition: ColumnElement[bool] = Delivery.email.in_(sorted(set(emails)))
    if subscriber_id is not None:
        condition = condition | (Delivery.subscriber_id == subscriber_id)
    return condition


def deliveries_for(
    session: Session, subscriber_id: int | None, emails: Iterable[str]
) -> list[tuple[Delivery, Issue]]:
    """Every delivery row about one person, with its issue, oldest first."""
    query = (
        select(Delivery, Issue)
        .join(Issue, Issue.id == Delivery.issue_id)
        .where(_delivery_filter(subscriber_id, emails))
        .order_by(Delivery.id)
    )
    return [(row[0], row[1]) for row in session.execute(query)]


ERASED_EMAIL = "erased"


def scrub_deliveries(session: Session, subscriber_id: int | None, emails: Iterable[str]) -> int:
    """Remove the personal data from one person's delivery rows; return how many changed.

    Pending rows become skipped, so an erased person is never mailed by a send in progress.
    SMTP replies often quote the address, so they are cleared too.
    """
    condition = _delivery_filter(subscriber_id, emails)
    session.execute(
        update(Delivery)
        .where(condition, Delivery.status == DeliveryStatus.PENDING)
        .values(status=DeliveryStatus.SKIPPED)
    )
    result = session.execute(
        update(Delivery)
        .where(condition)
        .values(email=ERASED_EMAIL, last_reply="", subscriber_id=None)
    )
    return int(getattr(result, "rowcount", 0))
