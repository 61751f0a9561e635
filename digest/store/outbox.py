"""Queries for the outbox: delivery rows, claims and leases, issue sender leases, the rate bucket.

Every state change the send loop makes goes through here, one short transaction at a time:
create the rows, claim a batch (``pending`` → ``inflight`` with a lease), record the results
(``inflight`` → ``sent``/``pending``/``failed``). A row is committed ``inflight`` before its
message is handed to a backend, so a crash can only ever repeat the rows that were in flight.
"""

from __future__ import annotations

import secrets
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    String,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from digest.models import (
    UNFINISHED_SQL,
    Delivery,
    DeliveryStatus,
    Issue,
    IssueStatus,
    SendRate,
    Subscriber,
    SubscriberStatus,
    UTCDateTime,
)

# Bound parameters per IN (...) list: below SQLite's old 999-variable limit.
_IN_CHUNK = 900

# The send loop's statements use the Core tables, not the mapped classes: an ORM-enabled
# UPDATE or SELECT costs several times the CPU of the same Core statement, per batch.
_deliveries = typing.cast(Table, Delivery.__table__)
_subscribers = typing.cast(Table, Subscriber.__table__)


def _id_in(session: Session, column: Column[Any] | Any, ids: Sequence[int]) -> ColumnElement[bool]:
    """column IN ids, as one array parameter on PostgreSQL.

    ``IN (…)`` expands to one parameter per id, so every batch size is a new SQL text, and
    psycopg re-parses a long query it does not cache; ``= ANY(:ids)`` is the same text for
    every batch. SQLite has no arrays and keeps IN.
    """
    if _dialect(session) == "postgresql":
        return typing.cast(ColumnElement[bool], column == any_(
            bindparam("ids", list(ids), type_=postgresql.ARRAY(Integer))
        ))
    return typing.cast(ColumnElement[bool], column.in_(list(ids)))


def _unfinished(session: Session, *statuses: DeliveryStatus) -> ColumnElement[bool]:
    """Rows in one of statuses (all unfinished), in a form the partial claim index matches.

    The status is inline SQL, never a bound parameter: PostgreSQL proves the index predicate
    (digest.models.UNFINISHED_SQL) from ``status = 'pending'`` but not from a parameter in a
    prepared, generic plan. SQLite matches a partial index only on its predicate word for
    word, so it gets that too; PostgreSQL must not, or the ``= ANY`` turns the ordered index
    walk into a sort of every pending row.
    """
    values = ", ".join(f"'{s.value}'" for s in statuses or tuple(_UNFINISHED_STATUSES))
    clause = text(f"deliveries.status IN ({values})")
    if _dialect(session) == "sqlite":
        return and_(clause, text("deliveries." + UNFINISHED_SQL))
    return and_(clause)


_UNFINISHED_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.INFLIGHT)


class ClaimedDelivery(NamedTuple):
    """A claimed delivery with what personalisation needs, detached from any session."""

    id: int
    message_id: str
    email: str
    attempts: int  # including this one
    subscriber_id: int | None
    subscriber_status: str | None  # None when the subscriber was erased meanwhile
    email_key: str
    name: str
    sections: list[str]
    timezone: str = ""  # the reader's IANA zone, "" for the publication's


class ResultRow(NamedTuple):
    """The recorded outcome of one claimed delivery."""

    id: int
    status: str  # sent, pending (retry later) or failed
    code: int | None
    reply: str
    next_attempt_at: datetime | None = None  # for pending


@dataclass(frozen=True, slots=True)
class Counts:
    """Deliveries of one issue by status."""

    pending: int = 0
    inflight: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def total(self) -> int:
        """Every delivery row."""
        return self.pending + self.inflight + self.sent + self.failed + self.skipped

    @property
    def unfinished(self) -> int:
        """Rows not yet final: pending or in flight."""
        return self.pending + self.inflight


def _rowcount(result: Any) -> int:
    """Rows an UPDATE or INSERT matched (Result's static type does not show rowcount)."""
    return int(getattr(result, "rowcount", 0) or 0)


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


# ------------------------------------------------------------------------------ creation


def subscriber_zones(session: Session) -> list[str]:
    """The distinct time zones active subscribers have set (a few hundred at most)."""
    return list(session.scalars(
        select(Subscriber.timezone).distinct()
        .where(Subscriber.status == SubscriberStatus.ACTIVE, Subscriber.timezone != "")
    ))


def create_deliveries(session: Session, issue_id: int, *, domain: str, now: datetime,
                      due_by_zone: Mapping[str, datetime] | None = None,
                      first_id: int | None = None, last_id: int | None = None) -> int:
    """One pending delivery per active subscriber, by INSERT … SELECT; returns the row count.

    The list is never loaded into Python. Each row gets its Message-ID here, once, so every
    retry of the row reuses it: a random token for this statement, then the subscriber's id
    plus a random offset (unique per issue, and it does not tell a reader the list's size).
    Ids that rise with the row keep the unique index's inserts in order; 32 random hex digits
    per row made a million-row insert about twice as slow. A row is not claimed before its
    ``next_attempt_at``: ``now``, or the due moment of the subscriber's time zone in
    due_by_zone (deliver_at = "local 08:00"), chosen by a CASE in the same statement.
    first_id/last_id limit the subscriber ids covered (both ends included).
    """
    token = secrets.token_hex(8)
    offset = secrets.randbelow(2**40)
    message_id = (
        literal(token + ".", String)
        + cast(cast(Subscriber.id, BigInteger) + literal(offset, BigInteger), String)
        + literal("@" + domain, String)
    )
    due: ColumnElement[datetime] = literal(now, UTCDateTime())
    if due_by_zone:
        due = case(
            {name: literal(moment, UTCDateTime()) for name, moment in due_by_zone.items()},
            value=Subscriber.timezone, else_=due,
        )
    rows = select(
        literal(issue_id, Integer),
        Subscriber.id,
        Subscriber.email,
        literal(DeliveryStatus.PENDING.value, String),
        literal(0, Integer),
        due,
        message_id,
        literal("", Text),
    ).where(Subscriber.status == SubscriberStatus.ACTIVE)
    if first_id is not None:
        rows = rows.where(Subscriber.id >= first_id)
    if last_id is not None:
        rows = rows.where(Subscriber.id <= last_id)
    stmt = _deliveries.insert().from_select(
        ["issue_id", "subscriber_id", "email", "status", "attempts", "next_attempt_at",
         "message_id", "last_reply"],
        rows,
    )
    # psycopg reports no row count for INSERT … SELECT unless SQLAlchemy is asked to keep it.
    return _rowcount(session.execute(stmt.execution_options(preserve_rowcount=True)))


def split_point(session: Session, head: int) -> tuple[int, int] | None:
    """(first id after the first head active subscribers, last active id), or None if fewer."""
    active = Subscriber.status == SubscriberStatus.ACTIVE
    cut = session.scalar(
        select(Subscriber.id).where(active).order_by(Subscriber.id).offset(head).limit(1)
    )
    if cut is None:
        return None
    last = session.scalar(select(func.max(Subscriber.id)).where(active))
    return int(cut), int(last if last is not None else cut)


def rest_count(session: Session, issue_id: int) -> int:
    """Delivery rows the issue will still get (active subscribers in its rest range)."""
    issue = session.execute(
        select(Issue.rest_from, Issue.rest_to).where(Issue.id == issue_id)
    ).one()
    if issue.rest_from is None:
        return 0
    return int(session.scalar(
        select(func.count()).select_from(Subscriber).where(
            Subscriber.status == SubscriberStatus.ACTIVE,
            Subscriber.id.between(issue.rest_from, issue.rest_to),
        )
    ) or 0)


# ------------------------------------------------------------------------------ claims


@dataclass
class ClaimCursor:
    """What one sender remembers between its claims, so a claim on PostgreSQL stays short.

    PostgreSQL keeps the index entry of every row version until VACUUM removes it, and a
    send updates each row twice (claimed, then sent). Without a cursor, every claim walks
    the index from the start of the issue's pending range over the dead entries of all the
    rows sent so far: at 1,000,000 subscribers the claim query came to touch ~4,000 pages
    for 100 rows (20 ms) and the send slowed from ~3,800 to ~2,300 rows/s as it went. So a
    sender starts its pending walk just after the last (due time, id) it claimed, and looks
    for expired leases (which walks the in-flight range) only every ``expired_every``.
    Whenever that finds less than a batch, the claim looks again over the whole range, so
    a row behind the cursor (given back by a sender that stopped, or made later for an
    earlier local-time wave) is still found before a sender decides nothing is left.
    SQLite updates its index in place and has no dead entries: it never uses the cursor.
    """

    expired_every: timedelta
    after: tuple[datetime, int] | None = None
    expired_checked: datetime | None = None

    def expired_due(self, now: datetime) -> bool:
        return self.expired_checked is None or now - self.expired_checked >= self.expired_every


def _claimable_ids(
    session: Session, issue_id: int, now: datetime, limit: int,
    cursor: ClaimCursor | None = None,
) -> list[int]:
    """Up to limit claimable row ids: in-flight rows whose lease ran out, then due pending rows.

    Two queries rather than one with OR: each walks ``ix_deliveries_claim`` (issue, status,
    next attempt, id) in that order and stops after limit rows, so a claim costs the same at
    80,000 rows as at 5,000. With the OR, SQLite read and sorted the issue's whole outbox on
    every claim. Pending rows are read in due order, so the rows of later local-time waves
    (deliver_at) lie past the end of the range and are never read before they fall due.
    With a cursor (PostgreSQL), see ClaimCursor.
    """
    table = _deliveries
    if cursor is not None and _dialect(session) != "postgresql":
        cursor = None

    def pick(status: DeliveryStatus, ready: ColumnElement[bool], count: int,
             *extra: ColumnElement[bool]) -> list[tuple[int, datetime]]:
        query = (
            select(table.c.id, table.c.next_attempt_at)
            .where(table.c.issue_id == issue_id, _unfinished(session, status), ready, *extra)
            .order_by(table.c.next_attempt_at, table.c.id)
            .limit(count)
            .with_for_update(skip_locked=True)
        )
        return [(int(i), at) for i, at in session.execute(query).all()]

    def expired(count: int) -> list[int]:
        return [i for i, _ in pick(DeliveryStatus.INFLIGHT, table.c.lease_expires_at <= now,
                                   count)]

    due = table.c.next_attempt_at <= now
    checked = cursor is None or cursor.expired_due(now)
    ids = expired(limit) if checked else []
    found: list[tuple[int, datetime]] = []
    if cursor is not None and cursor.after is not None and len(ids) < limit:
        at, last = cursor.after
        found = pick(DeliveryStatus.PENDING, due, limit - len(ids), tuple_(
            table.c.next_attempt_at, table.c.id,
        ) > tuple_(literal(at, UTCDateTime()), literal(last, Integer)))
    if len(ids) + len(found) < limit:
        # The whole range: no cursor yet, or it ran dry (rows behind it, or nothing left).
        if not checked:
            ids += expired(limit - len(ids) - len(found))
            checked = True
        # This walk meets the rows the cursor's walk just locked again: skip them.
        have = {i for i, _ in found}
        rest = limit - len(ids) - len(found)
        found += [row for row in pick(DeliveryStatus.PENDING, due, rest + len(found))
                  if row[0] not in have][:rest]
    if cursor is not None:
        if checked:
            cursor.expired_checked = now
        if found:
            last_found = max((when, i) for i, when in found)
            cursor.after = max(cursor.after, last_found) if cursor.after else last_found
    return ids + [i for i, _ in found]


def claim_batch(
    session: Session, issue_id: int, owner: str, *, limit: int, now: datetime,
    lease_until: datetime, cursor: ClaimCursor | None = None,
) -> list[ClaimedDelivery]:
    """Claim up to limit claimable rows for owner: in flight, leased until lease_until.

    On PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets several senders claim side by side without
    waiting for, or taking, each other's rows. On SQLite the write transaction (BEGIN
    IMMEDIATE) already serialises claims. Attempts are counted at claim time, so a message
    that kills its sender every time still runs out of attempts.
    """
    ids = _claimable_ids(session, issue_id, now, limit, cursor)
    if not ids:
        return []
    table = _deliveries
    claimed = session.execute(
        table.update()
        .where(_id_in(session, table.c.id, ids))
        .values(
            status=DeliveryStatus.INFLIGHT.value,
            claimed_by=owner,
            lease_expires_at=literal(lease_until, UTCDateTime()),
            attempts=table.c.attempts + 1,
        )
        .returning(table.c.id, table.c.message_id, table.c.email, table.c.attempts,
                   table.c.subscriber_id)
    ).all()
    people_ids = [c.subscriber_id for c in claimed if c.subscriber_id]
    people: dict[int, Any] = {}
    if people_ids:
        who = _subscribers.c
        people = {
            row.id: row
            for row in session.execute(
                select(who.id, who.status, who.email_key, who.name, who.sections, who.timezone)
                .where(_id_in(session, who.id, people_ids))
            ).all()
        }
    out = []
    for row in sorted(claimed, key=lambda r: r.id):
        person = people.get(row.subscriber_id) if row.subscriber_id is not None else None
        out.append(
            ClaimedDelivery(
                id=row.id,
                message_id=row.message_id,
                email=row.email,
                attempts=row.attempts,
                subscriber_id=row.subscriber_id,
                subscriber_status=person.status if person else None,
                email_key=person.email_key if person else row.email.lower(),
                name=person.name if person else "",
                sections=list(person.sections or ()) if person else [],
                timezone=person.timezone if person else "",
            )
        )
    return out


def _still_held(table: Table, owner: str) -> tuple[ColumnElement[bool], ...]:
    """The row bound as b_id, only while owner still holds it in flight."""
    return (
        table.c.id == bindparam("b_id"),
        table.c.claimed_by == owner,
        table.c.status == DeliveryStatus.INFLIGHT.value,
    )


def record_results(session: Session, owner: str, results: Sequence[ResultRow], *,
                   now: datetime) -> None:
    """Store the outcome of claimed rows, in two executemany statements.

    ``sent`` is always recorded: the backend took the message, whoever holds the row now.
    Anything else is recorded only while owner still holds the row, so a sender whose lease
    ran out cannot turn a row that another sender has since sent back into ``pending``.
    """
    sent = [
        {"b_id": r.id, "b_code": r.code, "b_reply": r.reply[:1000]}
        for r in results if r.status == DeliveryStatus.SENT
    ]
    other = [
        {"b_id": r.id, "b_status": r.status, "b_code": r.code, "b_reply": r.reply[:1000],
         "b_next": r.next_attempt_at or now}
        for r in results if r.status != DeliveryStatus.SENT
    ]
    table = _deliveries
    if sent and _dialect(session) == "postgresql":
        # One statement over three arrays: an executemany of a batch costs a round of
        # parameter handling per row in psycopg, which the send loop pays every batch.
        given = func.unnest(
            bindparam("u_ids", [r["b_id"] for r in sent], type_=postgresql.ARRAY(Integer)),
            bindparam("u_codes", [r["b_code"] for r in sent], type_=postgresql.ARRAY(Integer)),
            bindparam("u_replies", [r["b_reply"] for r in sent], type_=postgresql.ARRAY(Text)),
        ).table_valued("id", "code", "reply").render_derived()
        session.execute(
            table.update()
            .where(table.c.id == given.c.id)
            .values(
                status=DeliveryStatus.SENT.value,
                sent_at=literal(now, UTCDateTime()),
                last_code=given.c.code,
                last_reply=given.c.reply,
                claimed_by=None,
                lease_expires_at=None,
            )
        )
    elif sent:
        session.execute(
            table.update()
            .where(table.c.id == bindparam("b_id"))
            .values(
                status=DeliveryStatus.SENT.value,
                sent_at=literal(now, UTCDateTime()),
                last_code=bindparam("b_code", type_=Integer),
                last_reply=bindparam("b_reply", type_=Text),
                claimed_by=None,
                lease_expires_at=None,
            ),
            sent,
        )
    if other:
        session.execute(
            table.update()
            .where(*_still_held(table, owner))
            .values(
                status=bindparam("b_status", type_=String),
                last_code=bindparam("b_code", type_=Integer),
                last_reply=bindparam("b_reply", type_=Text),
                next_attempt_at=bindparam("b_next", type_=UTCDateTime()),
                claimed_by=None,
                lease_expires_at=None,
            ),
            other,
        )


def hold_deliveries(session: Session, owner: str, held: Sequence[tuple[int, datetime]]) -> None:
    """Give claimed rows back unsent until a later moment (their send window is closed).

    The claim counted an attempt; nothing was attempted, so it is taken back.
    """
    if not held:
        return
    table = _deliveries
    session.execute(
        table.update()
        .where(*_still_held(table, owner))
        .values(
            status=DeliveryStatus.PENDING.value,
            attempts=table.c.attempts - 1,
            next_attempt_at=bindparam("b_next", type_=UTCDateTime()),
            claimed_by=None,
            lease_expires_at=None,
        ),
        [{"b_id": row_id, "b_next": when} for row_id, when in held],
    )


def skip_deliveries(session: Session, owner: str, ids: Sequence[int], reason: str) -> None:
    """Mark claimed rows skipped (the subscriber left, or their sections are empty)."""
    for start in range(0, len(ids), _IN_CHUNK):
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids[start:start + _IN_CHUNK]), Delivery.claimed_by == owner)
            .values(status=DeliveryStatus.SKIPPED, last_reply=reason, claimed_by=None,
                    lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )


def _update_own_inflight(session: Session, ids: Sequence[int], owner: str,
                         **values: Any) -> None:
    """Set values on those of ids that owner still holds in flight."""
    for start in range(0, len(ids), _IN_CHUNK):
        session.execute(
            update(Delivery)
            .where(
                Delivery.id.in_(ids[start:start + _IN_CHUNK]),
                Delivery.claimed_by == owner,
                Delivery.status == DeliveryStatus.INFLIGHT,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )


def expire_claims(session: Session, ids: Sequence[int], owner: str, *, now: datetime) -> None:
    """End owner's lease on rows now, so the next sender re-sends them without waiting."""
    _update_own_inflight(session, ids, owner, lease_expires_at=now)


def unclaim(session: Session, ids: Sequence[int], owner: str) -> None:
    """Give claimed rows that never reached a backend back as pending, uncounted."""
    _update_own_inflight(session, ids, owner, status=DeliveryStatus.PENDING,
                         attempts=Delivery.attempts - 1, claimed_by=None, lease_expires_at=None)


def claim_owners(session: Session, issue_id: int) -> list[tuple[str, datetime | None, int]]:
    """(owner, latest lease end, rows) for every sender holding in-flight rows of the issue."""
    rows = session.execute(
        select(Delivery.claimed_by, func.max(Delivery.lease_expires_at), func.count())
        .where(Delivery.issue_id == issue_id, _unfinished(session, DeliveryStatus.INFLIGHT))
        .group_by(Delivery.claimed_by)
    )
    return [
        (owner or "", _as_utc(until) if until is not None else None, int(count))
        for owner, until, count in rows
    ]


def release_owner(session: Session, issue_id: int, owner: str, *, now: datetime) -> int:
    """Expire every lease a (dead) sender holds on the issue's rows; returns rows released."""
    result = session.execute(
        update(Delivery)
        .where(
            Delivery.issue_id == issue_id,
            _unfinished(session, DeliveryStatus.INFLIGHT),
            Delivery.claimed_by == owner,
        )
        .values(lease_expires_at=now)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result)


def next_due(session: Session, issue_id: int) -> datetime | None:
    """When the next row becomes claimable: a pending retry, or an in-flight lease ending."""
    pending = session.scalar(
        select(func.min(Delivery.next_attempt_at)).where(
            Delivery.issue_id == issue_id, _unfinished(session, DeliveryStatus.PENDING)
        )
    )
    leased = session.scalar(
        select(func.min(Delivery.lease_expires_at)).where(
            Delivery.issue_id == issue_id, _unfinished(session, DeliveryStatus.INFLIGHT)
        )
    )
    moments = [_as_utc(m) for m in (pending, leased) if m is not None]
    return min(moments) if moments else None


def next_retry(session: Session, issue_id: int) -> tuple[int, datetime | None]:
    """(pending rows, earliest next attempt) of the issue."""
    count, earliest = session.execute(
        select(func.count(), func.min(Delivery.next_attempt_at)).where(
            Delivery.issue_id == issue_id, _unfinished(session, DeliveryStatus.PENDING)
        )
    ).one()
    return int(count), (_as_utc(earliest) if earliest is not None else None)


def waiting_count(session: Session, issue_id: int) -> int:
    """Pending rows never tried yet: due later (their reader's hour, or a send window)."""
    return int(session.scalar(
        select(func.count()).where(
            Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.PENDING,
            Delivery.attempts == 0,
        )
    ) or 0)


def upcoming_waves(session: Session, issue_id: int, now: datetime,
                   ) -> list[tuple[datetime, int]]:
    """(due moment, rows) of first attempts still to come, earliest first.

    With deliver_at = "local HH:MM" every time zone's readers are due at their own moment;
    the zones that share a UTC offset share a wave. At most a few dozen moments.
    """
    rows = session.execute(
        select(Delivery.next_attempt_at, func.count())
        .where(Delivery.issue_id == issue_id, _unfinished(session, DeliveryStatus.PENDING),
               Delivery.attempts == 0, Delivery.next_attempt_at > now)
        .group_by(Delivery.next_attempt_at)
        .order_by(Delivery.next_attempt_at)
    )
    return [(_as_utc(when), int(count)) for when, count in rows]


def _as_utc(value: Any) -> datetime:
    """Aggregates (min/max) lose the column type on SQLite and come back as text."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    result = UTCDateTime().process_result_value(value, None)  # type: ignore[arg-type]
    assert result is not None
    return result


# ------------------------------------------------------------------------------ counts


def counts(session: Session, issue_id: int) -> Counts:
    """The issue's deliveries by status."""
    return all_counts(session, [issue_id]).get(issue_id, Counts())


def expected_counts(session: Session, issue_id: int) -> Counts:
    """counts(), with the rows the issue has still to get (rest_count) counted as pending."""
    now = counts(session, issue_id)
    rest = rest_count(session, issue_id)
    return replace(now, pending=now.pending + rest) if rest else now


def all_counts(session: Session, issue_ids: Sequence[int] | None = None) -> dict[int, Counts]:
    """Deliveries by status for each issue (all issues when issue_ids is None)."""
    query = select(Delivery.issue_id, Delivery.status, func.count()).group_by(
        Delivery.issue_id, Delivery.status
    )
    if issue_ids is not None:
        query = query.where(Delivery.issue_id.in_(issue_ids))
    by_issue: dict[int, dict[str, int]] = {}
    for issue_id, status, count in session.execute(query):
        by_issue.setdefault(issue_id, {})[status] = int(count)
    return {
        issue_id: Counts(**{s: n for s, n in values.items() if s in Counts.__slots__})
        for issue_id, values in by_issue.items()
    }


def last_errors(session: Session, issue_id: int, limit: int = 10) -> list[Delivery]:
    """The most recent failed or retrying rows with an error reply."""
    return list(
        session.scalars(
            select(Delivery)
            .where(
                Delivery.issue_id == issue_id,
                Delivery.status.in_((DeliveryStatus.FAILED, DeliveryStatus.PENDING)),
                Delivery.attempts > 0,
            )
            .order_by(Delivery.id.desc())
            .limit(limit)
        )
    )


def section_choices(session: Session) -> list[tuple[str, int]]:
    """(sections as stored JSON text, active subscribers) per distinct section choice."""
    text = cast(Subscriber.sections, Text)
    return [
        (str(value or "[]"), int(count))
        for value, count in session.execute(
            select(text, func.count())
            .where(Subscriber.status == SubscriberStatus.ACTIVE)
            .group_by(text)
        )
    ]


# ------------------------------------------------------------------------------ subscribers


def mark_bounced(session: Session, subscriber_ids: Sequence[int], *, now: datetime) -> int:
    """Active subscribers whose address does not exist become ``bounced``."""
    done = 0
    for start in range(0, len(subscriber_ids), _IN_CHUNK):
        result = session.execute(
            update(Subscriber)
            .where(
                Subscriber.id.in_(subscriber_ids[start:start + _IN_CHUNK]),
                Subscriber.status == SubscriberStatus.ACTIVE,
            )
            .values(status=SubscriberStatus.BOUNCED, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        done += _rowcount(result)
    return done


# ------------------------------------------------------------------------------ issues


def issue_status(session: Session, issue_id: int) -> tuple[str, str | None, datetime | None]:
    """(status, lease owner, lease end) of an issue, read fresh."""
    row = session.execute(
        select(Issue.status, Issue.lease_owner, Issue.lease_expires_at).where(Issue.id == issue_id)
    ).one()
    return row.status, row.lease_owner, row.lease_expires_at


def take_issue_lease(
    session: Session, issue_id: int, owner: str, *, now: datetime, until: datetime,
    steal_from: str | None = None,
) -> bool:
    """Take or renew the issue's sender lease unless a live lease belongs to someone else.

    ``steal_from`` names a holder known to be dead (same host, no such pid) whose lease may be
    taken before it runs out.
    """
    free = or_(
        Issue.lease_owner.is_(None),
        Issue.lease_owner == owner,
        Issue.lease_expires_at.is_(None),
        Issue.lease_expires_at <= now,
    )
    if steal_from:
        free = or_(free, Issue.lease_owner == steal_from)
    result = session.execute(
        update(Issue)
        .where(Issue.id == issue_id, free)
        .values(lease_owner=owner, lease_expires_at=until)
        .execution_options(synchronize_session=False)
    )
    return bool(_rowcount(result))


def release_issue_lease(session: Session, issue_id: int, owner: str) -> None:
    """Give the issue's sender lease up, if owner still holds it."""
    session.execute(
        update(Issue)
        .where(Issue.id == issue_id, Issue.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


def set_issue_status(session: Session, issue_id: int, status: str,
                     *, only_from: Sequence[str] | None = None) -> bool:
    """Change an issue's status (optionally only from given statuses); True if it changed."""
    stmt = update(Issue).where(Issue.id == issue_id)
    if only_from is not None:
        stmt = stmt.where(Issue.status.in_(only_from))
    result = session.execute(
        stmt.values(status=status).execution_options(synchronize_session=False)
    )
    return bool(_rowcount(result))


def skip_unsent(session: Session, issue_id: int, reason: str) -> int:
    """Mark every pending row of a cancelled issue skipped; returns the number of rows."""
    result = session.execute(
        update(Delivery)
        .where(Delivery.issue_id == issue_id, _unfinished(session, DeliveryStatus.PENDING))
        .values(status=DeliveryStatus.SKIPPED, last_reply=reason)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result)


def finish_issue(session: Session, issue_id: int, *, now: datetime) -> bool:
    """Mark a sending issue sent once no row is pending or in flight; True if it was."""
    unfinished = (
        select(Delivery.id)
        .where(
            Delivery.issue_id == issue_id,
            _unfinished(session),
        )
        .exists()
    )
    result = session.execute(
        update(Issue)
        .where(Issue.id == issue_id, Issue.status == IssueStatus.SENDING, ~unfinished,
               Issue.rest_from.is_(None))
        .values(status=IssueStatus.SENT, sent_at=now, lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    return bool(_rowcount(result))


# ------------------------------------------------------------------------------ rate bucket


def take_tokens(
    session: Session, name: str, count: float, *, rate: float, burst: float, now: datetime
) -> float:
    """Reserve count tokens from the shared bucket; returns the seconds to wait before use.

    The bucket refills at ``rate`` per second up to ``burst``. A reservation may take it below
    zero: the caller then waits until the debt is paid, and the next caller (in any process)
    waits behind it, so the total stays at ``rate`` however many senders share the row.
    """
    insert = postgresql.insert if _dialect(session) == "postgresql" else sqlite.insert
    session.execute(
        insert(SendRate)
        .values(name=name, tokens=0.0, updated_at=now)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    row = session.execute(
        select(SendRate.tokens, SendRate.updated_at)
        .where(SendRate.name == name)
        .with_for_update()
    ).one()
    elapsed = max(0.0, (now - row.updated_at).total_seconds())
    tokens = min(burst, row.tokens + elapsed * rate) - count
    session.execute(
        update(SendRate)
        .where(SendRate.name == name)
        .values(tokens=tokens, updated_at=max(now, row.updated_at))
        .execution_options(synchronize_session=False)
    )
    return max(0.0, -tokens / rate) if rate > 0 else 0.0


def reset_bucket(session: Session, name: str, *, now: datetime) -> None:
    """Empty the named bucket (tests and benchmarks start from a known state)."""
    session.execute(
        update(SendRate).where(SendRate.name == name).values(tokens=0.0, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def lease_for(seconds: float, now: datetime) -> datetime:
    """The lease end for a lease of seconds from now."""
    return now + timedelta(seconds=seconds)


__all__ = [
    "ClaimCursor",
    "ClaimedDelivery",
    "Counts",
    "ResultRow",
    "all_counts",
    "claim_batch",
    "claim_owners",
    "counts",
    "create_deliveries",
    "expected_counts",
    "expire_claims",
    "finish_issue",
    "hold_deliveries",
    "issue_status",
    "last_errors",
    "lease_for",
    "mark_bounced",
    "next_due",
    "next_retry",
    "record_results",
    "release_issue_lease",
    "release_owner",
    "reset_bucket",
    "rest_count",
    "section_choices",
    "set_issue_status",
    "skip_deliveries",
    "skip_unsent",
    "split_point",
    "subscriber_zones",
    "take_issue_lease",
    "take_tokens",
    "unclaim",
    "upcoming_waves",
    "waiting_count",
]
