"""Queries for a streaming subscriber import: a staging table, then one upsert from it.

Rows are validated in Python a chunk at a time and appended to a temporary table
(``COPY`` on PostgreSQL, executemany on SQLite), so memory stays flat however long the file.
Repeated addresses, suppressed addresses and the upsert itself are then set operations in the
database, inside the caller's one transaction.
"""

# The SQL below is assembled only from this module's constants; every value is bound.
# ruff: noqa: S608

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import text
from sqlalchemy.orm import Session

from digest.models import Subscriber, SubscriberStatus
from digest.store.subscribers import _LEFT_SQL, _upsert_sql

_TABLE = "import_rows"
_COLUMNS = ("line", "email", "email_key", "name", "sections", "status", "timezone", "hash")
# The last row of each address wins, as in a spreadsheet read top to bottom.
_LAST = (
    f"(SELECT * FROM (SELECT r.*, ROW_NUMBER() OVER (PARTITION BY email_key ORDER BY line DESC)"
    f" AS rn FROM {_TABLE} r) ranked WHERE rn = 1) d"
)
_NOT_SUPPRESSED = "NOT EXISTS (SELECT 1 FROM suppressions s WHERE s.email_hash = d.hash)"


class StagedRow(NamedTuple):
    """One validated row on its way into the staging table."""

    line: int
    email: str
    email_key: str
    name: str
    sections: list[str]
    status: str  # "" when the file has no status for it
    timezone: str
    hash: str | None  # suppression hash, when it may be needed


def begin(session: Session) -> None:
    """Create the (empty) staging table for this transaction."""
    session.execute(text(f"DROP TABLE IF EXISTS {_TABLE}"))
    session.execute(text(
        f"CREATE TEMPORARY TABLE {_TABLE} (line integer NOT NULL, email text NOT NULL, "
        "email_key text NOT NULL, name text NOT NULL, sections text NOT NULL, "
        "status text NOT NULL, timezone text NOT NULL, hash text)"
    ))


def add(session: Session, rows: Sequence[StagedRow], dumped: dict[tuple[str, ...], str]) -> None:
    """Append rows to the staging table: COPY on PostgreSQL, one executemany on SQLite.

    dumped caches section lists as JSON text (a list repeats a handful of choices).
    """
    if not rows:
        return

    def sections(value: list[str]) -> str:
        key = tuple(value)
        found = dumped.get(key)
        if found is None:
            found = dumped[key] = json.dumps(value)
        return found

    values = [(r.line, r.email, r.email_key, r.name, sections(r.sections), r.status,
               r.timezone, r.hash) for r in rows]
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        raw: Any = connection.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(
            f"COPY {_TABLE} ({', '.join(_COLUMNS)}) FROM STDIN"
        ) as copy:
            for value in values:
                copy.write_row(value)
        return
    connection.exec_driver_sql(
        f"INSERT INTO {_TABLE} ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
        values,
    )


def duplicates(session: Session, limit: int) -> tuple[int, list[tuple[int, int]]]:
    """(rows repeating an earlier address, the first limit (line, the later line used))."""
    count = session.execute(text(
        f"SELECT count(*) - count(DISTINCT email_key) FROM {_TABLE}"
    )).scalar_one()
    pairs = session.execute(text(
        f"SELECT line, next_line FROM (SELECT line, LEAD(line) OVER (PARTITION BY email_key "
        f"ORDER BY line) AS next_line FROM {_TABLE}) t WHERE next_line IS NOT NULL "
        "ORDER BY line LIMIT :limit"
    ), {"limit": limit}).all()
    return int(count or 0), [(int(a), int(b)) for a, b in pairs]


def suppressed(session: Session) -> int:
    """Addresses (after de-duplication) that are on the suppression list."""
    return int(session.execute(text(
        f"SELECT count(*) FROM {_LAST} WHERE NOT {_NOT_SUPPRESSED}"
    )).scalar_one() or 0)


def written(session: Session) -> int:
    """Addresses (after de-duplication) the upsert writes."""
    return int(session.execute(text(
        f"SELECT count(*) FROM {_LAST} WHERE {_NOT_SUPPRESSED}"
    )).scalar_one() or 0)


def upsert(session: Session, *, columns: Iterable[str], source: str, now: datetime) -> None:
    """Insert or update every staged address that is not suppressed, in two statements.

    Rows without a status insert as active and keep an existing subscriber's status; rows
    with one set it, except that nobody who left is made active or pending again (see
    store.subscribers.upsert_many, which this mirrors).
    """
    columns = tuple(columns)
    connection = session.connection()
    dialect = connection.dialect
    to_db = Subscriber.__table__.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)
    now_db = to_db(now) if to_db is not None else now
    postgres = dialect.name == "postgresql"
    sections = "CAST(d.sections AS json)" if postgres else "d.sections"
    stamp = "CAST(:now AS timestamptz)" if postgres else ":now"
    for set_status, which in ((False, "d.status = ''"), (True, "d.status <> ''")):
        source_sql = (
            f"SELECT d.email, d.email_key, d.name, {sections}, "
            f"CASE WHEN d.status = '' THEN '{SubscriberStatus.ACTIVE.value}' ELSE d.status END, "
            f":source, {stamp}, {stamp}, CASE WHEN d.status IN {_LEFT_SQL} THEN {stamp} END, "
            f"d.timezone FROM {_LAST} WHERE {which} AND {_NOT_SUPPRESSED}"
        )
        session.execute(text(_upsert_sql(columns, set_status, source_sql)),
                        {"source": source, "now": now_db})


def new_suppressions(session: Session, now: datetime) -> None:
    """Suppress every staged address imported as bounced or complained."""
    connection = session.connection()
    dialect = connection.dialect
    to_db = Subscriber.__table__.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)
    session.execute(text(
        "INSERT INTO suppressions (email_hash, reason, created_at) "
        f"SELECT d.hash, d.status, :now FROM {_LAST} "
        "WHERE d.status IN ('bounced', 'complained') AND d.hash IS NOT NULL "
        "ON CONFLICT (email_hash) DO NOTHING"
    ), {"now": to_db(now) if to_db is not None else now})


def end(session: Session) -> None:
    """Drop the staging table."""
    session.execute(text(f"DROP TABLE IF EXISTS {_TABLE}"))
