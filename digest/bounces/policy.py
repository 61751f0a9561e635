"""What a bounce or complaint does: find its delivery, store the event, change the subscriber.

- Hard bounce (5.1.x "no such mailbox"): the subscriber is marked bounced and suppressed.
- Soft bounce: counted; ``bounce_soft_limit`` in a row within ``bounce_soft_days`` mark the
  subscriber bounced. Policy refusals (X.7.x) and delays are stored but never counted: they
  are about the sender's reputation or the relay's progress, not about the reader.
- Complaint (ARF abuse report): unsubscribed and suppressed at once.

A report is tied to a delivery by its signed VERP address first, then by the original
Message-ID. A VERP tag whose signature does not verify makes the whole report count for
nothing. Only when ``verp`` is off may the reported address alone name the subscriber.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from digest import subscribers, verp
from digest.bounces.parse import Recipient, Report
from digest.config import Settings
from digest.errors import InputError
from digest.models import BounceEvent, BounceKind, Delivery, Subscriber, SubscriberStatus
from digest.store import bounces as store
from digest.store import subscribers as subscriber_store

#: What :func:`apply` concluded about a whole report.
APPLIED = "applied"  # events stored (and maybe subscribers changed)
DUPLICATE = "duplicate"  # this report was read before
FORGED = "forged"  # a VERP tag with a bad signature
UNMATCHED = "unmatched"  # nothing ties it to a delivery or a subscriber
NOTHING = "nothing"  # a report with no failure in it (delivered, not-spam, …)


@dataclass(frozen=True, slots=True)
class Applied:
    """One stored event and what it did."""

    email: str
    kind: str
    status_code: str
    action: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What processing one report did."""

    result: str
    events: tuple[Applied, ...] = ()

    @property
    def line(self) -> str:
        """A one-line description for logs and the CLI."""
        if not self.events:
            return self.result
        return "; ".join(f"{e.kind} {e.email or '(address withheld)'} "
                         f"{e.status_code} → {e.action}".replace("  ", " ")
                         for e in self.events)


def apply(
    session: Session,
    settings: Settings,
    report: Report,
    raw: bytes,
    *,
    source: str,
    envelope_recipients: tuple[str, ...] = (),
    now: datetime,
) -> Outcome:
    """Store the report's events and apply them, inside the caller's transaction."""
    if not report.recipients:
        return Outcome(NOTHING)
    tags = [tag for tag in (verp.decode(settings, address)
                            for address in (*envelope_recipients, *report.sent_to)) if tag]
    valid = [tag for tag in tags if tag.valid and tag.delivery_id is not None]
    if tags and not valid:
        return Outcome(FORGED)
    delivery: Delivery | None = None
    matched_by = ""
    if valid:
        delivery = store.delivery(session, valid[0].delivery_id or 0)
        matched_by = "verp"
    else:
        delivery = store.delivery_by_message_id(session, report.message_ids)
        matched_by = "message-id"
    base = hashlib.sha256(raw).hexdigest()

    if delivery is not None:
        entry = _entry_for(report.recipients, delivery.email)
        subscriber = (session.get(Subscriber, delivery.subscriber_id)
                      if delivery.subscriber_id is not None else None)
        one = _record(session, settings, entry, subscriber, delivery, matched_by, source,
                      f"{base}:d{delivery.id}", now)
        return Outcome(DUPLICATE) if one is None else Outcome(APPLIED, (one,))
    if valid or settings.verp:
        return Outcome(UNMATCHED)

    events = []
    for entry in report.recipients:
        subscriber = _subscriber_by_address(session, entry.email)
        if subscriber is None:
            continue
        one = _record(session, settings, entry, subscriber, None, "address", source,
                      f"{base}:{subscriber.email_key}", now)
        if one is not None:
            events.append(one)
    if events:
        return Outcome(APPLIED, tuple(events))
    return Outcome(UNMATCHED if not _any_known(session, report) else DUPLICATE)


def _record(
    session: Session, settings: Settings, entry: Recipient, subscriber: Subscriber | None,
    delivery: Delivery | None, matched_by: str, source: str, key: str, now: datetime,
) -> Applied | None:
    """Store one event and act on it; None if it was stored before."""
    fingerprint = hashlib.sha256(key.encode()).hexdigest()
    if store.has_event(session, fingerprint):
        return None
    email = delivery.email if delivery is not None else entry.email
    event = BounceEvent(
        fingerprint=fingerprint, received_at=now, kind=entry.kind,
        delivery_id=delivery.id if delivery else None,
        issue_id=delivery.issue_id if delivery else None,
        subscriber_id=subscriber.id if subscriber else None,
        email=email[:320], status_code=entry.status[:20], diagnostic=entry.diagnostic,
        source=source, matched_by=matched_by,
    )
    store.add_event(session, event)
    event.action = _act(session, settings, subscriber, entry.kind, now)
    return Applied(email, entry.kind, entry.status, event.action)


def _act(
    session: Session, settings: Settings, subscriber: Subscriber | None, kind: str,
    now: datetime,
) -> str:
    """Change the subscriber as the event requires; return what was done."""
    if subscriber is None:
        return "no subscriber"
    if kind == BounceKind.COMPLAINT:
        subscribers.suppress(session, subscriber.email, SubscriberStatus.COMPLAINED, now)
        return "unsubscribed and suppressed"
    if subscriber.status in (SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED):
        return f"already {subscriber.status}"
    if kind == BounceKind.HARD:
        subscribers.suppress(session, subscriber.email, SubscriberStatus.BOUNCED, now)
        return "marked bounced"
    if kind == BounceKind.SOFT:
        since = now - timedelta(days=settings.bounce_soft_days)
        streak = store.soft_streak(session, subscriber.id, since)
        if streak >= settings.bounce_soft_limit:
            subscribers.suppress(session, subscriber.email, SubscriberStatus.BOUNCED, now)
            return f"marked bounced after {streak} soft bounces"
        return f"soft bounce {streak} of {settings.bounce_soft_limit}"
    return "recorded"


def _entry_for(recipients: tuple[Recipient, ...], email: str) -> Recipient:
    """The report's entry for the delivery's address, else its first (a mangled report)."""
    wanted = email.lower()
    return next((r for r in recipients if r.email.lower() == wanted), recipients[0])


def _subscriber_by_address(session: Session, email: str) -> Subscriber | None:
    if not email:
        return None
    try:
        address = subscribers.normalise(email)
    except InputError:
        return None
    return subscriber_store.get_by_key(session, address.key, for_update=True)


def _any_known(session: Session, report: Report) -> bool:
    return any(_subscriber_by_address(session, r.email) is not None for r in report.recipients)
