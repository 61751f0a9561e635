"""Bounces and complaints: read the reports relays and mailbox providers send back, and act.

``parse`` reads a report, ``policy`` decides what it does (``digest.verp`` makes and checks
the signed envelope senders it relies on), ``mailbox`` fetches reports over IMAP or POP3 and
``receiver`` takes them over SMTP or LMTP. :func:`process` is the one path every source
goes through: it commits before it returns, so a caller deletes or acknowledges a message
only after that.
"""

from __future__ import annotations

from datetime import datetime

from digest.bounces.parse import parse
from digest.bounces.policy import Outcome, apply
from digest.config import Settings
from digest.db import Database
from digest.models import utcnow
from digest.store import bounces as store
from digest.store.bounces import EventRow

#: Result of a message that is not a report: the caller keeps it for a person to read.
KEPT = "kept"

__all__ = ["KEPT", "EventRow", "Outcome", "issue_counts", "process", "recent_events"]


def process(
    db: Database,
    settings: Settings,
    raw: bytes,
    *,
    source: str,
    envelope_recipients: tuple[str, ...] = (),
    now: datetime | None = None,
) -> Outcome:
    """Parse one raw message and apply it in its own transaction, committed on return."""
    report = parse(raw)
    if report is None:
        return Outcome(KEPT)
    with db.write() as session:
        return apply(session, settings, report, raw, source=source,
                     envelope_recipients=envelope_recipients, now=now or utcnow())


def recent_events(db: Database, limit: int = 50, kind: str | None = None) -> list[EventRow]:
    """The newest bounce and complaint events, newest first."""
    with db.read() as session:
        return store.recent(session, limit, kind)


def issue_counts(db: Database, issue_id: int) -> dict[str, int]:
    """Bounce and complaint events per kind for one issue."""
    with db.read() as session:
        return store.counts_for_issue(session, issue_id)

