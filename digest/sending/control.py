"""Issue control: find, create, list, inspect, pause, resume and cancel an issue's send."""

from __future__ import annotations

import itertools
import random
import re
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from digest.config import Settings
from digest.db import Database
from digest.errors import (
    DigestError,
    InputError,
    NotFoundError,
    SendError,
)
from digest.issues import (
    IssueContent,
    Window,
    content_of,
    dated,
    existing_issue,
    freeze_issue,
)
from digest.models import Issue, IssueStatus, utcnow
from digest.render import Renderer
from digest.sending.results import SendSummary, outcome_details
from digest.sending.waves import Timing
from digest.store import issues as issue_store
from digest.store import outbox, retries

#: Delivery rows made with the issue on PostgreSQL; complete_outbox makes the rest.
HEAD_ROWS = 2000
#: Subscriber ids per INSERT … SELECT of complete_outbox (one short transaction each).
REST_CHUNK = 50_000
# Advisory lock class (the first key) under which complete_outbox runs, per issue id.
_REST_LOCK = 0x64676F62

def message_id_domain(settings: Settings) -> str:
    """The domain in generated Message-IDs: the DKIM domain, else the From address's."""
    domain = settings.dkim_domain.strip() or settings.from_email.rpartition("@")[2].strip()
    domain = domain.rstrip(">").strip() or "localhost"
    if not re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*", domain):
        raise InputError(f"cannot make Message-IDs for domain {domain!r}: check from_email")
    return domain





class IssueRef(NamedTuple):
    """An issue's identity and status, detached from any session."""

    id: int
    number: int
    label: str
    status: str
    window_start: datetime
    window_end: datetime


def ref_of(issue: Issue) -> IssueRef:
    return IssueRef(issue.id, issue.number, issue.label, issue.status, issue.window_start,
                    issue.window_end)


def window_of(issue: IssueRef) -> Window:
    """The window an existing issue covers."""
    return Window(issue.window_start, issue.window_end, issue.label)


def find_issue(session: Session, window: Window) -> Issue | None:
    """The issue for this window, or for the same ISO week label (never two for one week)."""
    return existing_issue(session, window)


def lookup_issue(db: Database, ref: str) -> IssueRef:
    """An issue by label (2025-W47) or number; NotFoundError says how to list them."""
    with db.read() as session:
        issue = issue_store.issue_by_label(session, ref.strip())
        if issue is None:
            raise NotFoundError(f"no issue {ref!r}; run `digest issues` to list them")
        return ref_of(issue)


def create_issue(
    db: Database, settings: Settings, window: Window, content: IssueContent, *,
    now: datetime | None = None,
) -> tuple[IssueRef, bool]:
    """Freeze the issue and create one delivery per active subscriber, in one transaction.

    Returns (issue, created). If another process created the issue for this window first
    (the unique window or number constraint fires), its issue is returned instead.
    """
    domain = message_id_domain(settings)
    for _ in range(5):
        try:
            with db.write() as session:
                existing = find_issue(session, window)
                if existing is not None and existing.status == IssueStatus.DRAFT:
                    # The editor's draft is sent as it stands, dated the day its send starts.
                    own = Window(existing.window_start, existing.window_end, existing.label)
                    promoted = issue_store.promote_draft(session, existing.id,
                                                         dated(settings, own, now,
                                                               sending=True))
                    session.refresh(existing)
                    if not promoted:  # another sender started it first
                        return ref_of(existing), False
                    issue = existing
                elif existing is not None:
                    return ref_of(existing), False
                else:
                    day = dated(settings, window, now, sending=True)
                    issue = freeze_issue(session, replace(content, issue_date=day))
                moment = now or utcnow()
                due = Timing.from_settings(settings).due_times(
                    window.end, outbox.subscriber_zones(session), moment
                )
                # On PostgreSQL a large list gets its first rows now and the rest from
                # complete_outbox, so the first message leaves within a second, not after a
                # million-row insert. SQLite has one writer: the rest would hold up claims.
                split = None if db.is_sqlite else outbox.split_point(session, HEAD_ROWS)
                outbox.create_deliveries(session, issue.id, domain=domain, now=due.default,
                                         due_by_zone=due.by_zone,
                                         last_id=split[0] - 1 if split else None)
                if split is not None:
                    issue.rest_from, issue.rest_to = split
                    issue.rest_moment = moment
                return ref_of(issue), True
        except IntegrityError:
            # Lost a race with another `digest send`: read what it created.
            time.sleep(random.uniform(0.05, 0.2))
    raise SendError("could not create the issue: another process keeps creating issues; retry")



def complete_outbox(db: Database, settings: Settings, issue_id: int, *,
                    chunks: int | None = None) -> int:
    """Make the delivery rows create_issue left for later, REST_CHUNK subscriber ids at a time.

    Returns the rows this call made (0 when none were left). Each chunk is one INSERT …
    SELECT in its own short transaction, so senders claim and record between chunks instead
    of waiting for a million-row statement. Any number of senders may call this at once:
    they take turns on an advisory lock, and each chunk is made exactly once, since the
    transaction that makes it also moves rest_from past it. A sender that dies halfway
    loses only its open chunk, which the next caller makes. chunks bounds how many this call
    makes (a sender with nothing to claim makes one, then sends it).
    """
    domain = message_id_domain(settings)
    made = 0
    for _ in itertools.count() if chunks is None else range(chunks):
        with db.read() as session:
            if session.scalar(select(Issue.rest_from).where(Issue.id == issue_id)) is None:
                return made
        with db.write() as session:
            session.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"),
                            {"a": _REST_LOCK, "b": issue_id})
            issue = session.get_one(Issue, issue_id, populate_existing=True)
            if issue.rest_from is None or issue.rest_to is None:
                return made
            last = min(issue.rest_to, issue.rest_from + REST_CHUNK - 1)
            due = Timing.from_settings(settings).due_times(
                issue.window_end, outbox.subscriber_zones(session),
                issue.rest_moment or utcnow(),
            )
            made += outbox.create_deliveries(
                session, issue_id, domain=domain, now=due.default, due_by_zone=due.by_zone,
                first_id=issue.rest_from, last_id=last,
            )
            if last >= issue.rest_to:
                issue.rest_from = issue.rest_to = None
                issue.rest_moment = None
            else:
                issue.rest_from = last + 1
            if issue.status == IssueStatus.CANCELLED:
                outbox.skip_unsent(session, issue_id, "issue cancelled")
    return made


def summarise(db: Database, issue: IssueRef) -> SendSummary:
    """The state of an issue's send, without sending anything."""
    with db.read() as session:
        status, _, _ = outbox.issue_status(session, issue.id)
        counts = outbox.counts(session, issue.id)
        retry_count, retry_after = outbox.next_retry(session, issue.id)
        details = outcome_details(session, issue.id)
    return SendSummary(
        issue_id=issue.id, number=issue.number, label=issue.label, status=status, counts=counts,
        retry_count=retry_count, retry_after=retry_after, **details,
        stopped=status if status in (IssueStatus.PAUSED, IssueStatus.CANCELLED) else None,
    )





@dataclass(frozen=True, slots=True)
class IssueDetails:
    """``digest issues show``: an issue, its counts, its senders and its latest errors."""

    issue: IssueRef
    subject: str
    created_at: datetime
    sent_at: datetime | None
    counts: outbox.Counts
    senders: list[tuple[str, datetime | None, int]]
    errors: list[tuple[str, int, int | None, str]]  # (email, attempts, code, reply)
    retry_after: datetime | None
    lease_owner: str | None = None
    retryable: int = 0  # failed rows that digest send --retry-failed would requeue
    waves: list[tuple[datetime, int]] = field(default_factory=list)  # (due, rows) to come


def list_issues(db: Database) -> list[tuple[IssueRef, outbox.Counts]]:
    """Every issue, newest first, with its delivery counts."""
    with db.read() as session:
        issues = issue_store.list_issues(session)
        counts = outbox.all_counts(session)
        return [(ref_of(i), counts.get(i.id, outbox.Counts())) for i in issues]


def retryable_by_issue(db: Database) -> dict[int, int]:
    """Failed deliveries a retry could fix, per issue id (issues without any left out)."""
    with db.read() as session:
        return retries.retryable_counts(session)


def issue_details(db: Database, ref: str, *, errors: int = 10,
                  settings: Settings | None = None, now: datetime | None = None,
                  ) -> IssueDetails:
    """Everything ``digest issues show`` prints about one issue.

    With settings, an issue without a subject override shows the subject readers get.
    """
    found = lookup_issue(db, ref)
    with db.read() as session:
        issue = session.get_one(Issue, found.id)
        subject = issue.subject
        if not subject and settings is not None:
            try:
                subject = Renderer(settings).compile(content_of(session, issue), None).subject
            except DigestError:
                subject = ""
        return IssueDetails(
            issue=found,
            subject=subject,
            created_at=issue.created_at,
            sent_at=issue.sent_at,
            counts=outbox.counts(session, issue.id),
            senders=outbox.claim_owners(session, issue.id),
            errors=[(d.email, d.attempts, d.last_code, d.last_reply)
                    for d in outbox.last_errors(session, issue.id, errors)],
            retry_after=outbox.next_retry(session, issue.id)[1],
            lease_owner=issue.lease_owner,
            retryable=retries.retryable_counts(session, [issue.id]).get(issue.id, 0),
            waves=outbox.upcoming_waves(session, issue.id, now or utcnow()),
        )


def retry_failed(db: Database, ref: str | None, *,
                 now: datetime | None = None) -> tuple[IssueRef, int]:
    """Requeue an issue's retryable failed deliveries (see store.retries) and reopen it.

    ref is a label or number; without it, the newest issue with retryable failures. Returns
    the issue, sending again if anything was requeued, and how many rows were.
    """
    with db.write() as session:
        if ref:
            found = issue_store.issue_by_label(session, ref.strip())
            if found is None:
                raise NotFoundError(f"no issue {ref!r}; run `digest issues` to list them")
        else:
            newest = retries.newest_with_retryable(session)
            found = session.get(Issue, newest) if newest is not None else None
            if found is None:
                raise NotFoundError(
                    "no issue has failed deliveries that a retry could fix; "
                    "`digest issues` lists them"
                )
        issue = ref_of(found)
        if issue.status in (IssueStatus.PAUSED, IssueStatus.CANCELLED):
            raise SendError(
                f"issue {issue.number} ({issue.label}) is {issue.status}; "
                + ("resume it first (digest issues resume " + issue.label + ")"
                   if issue.status == IssueStatus.PAUSED else "a cancelled issue is not retried")
            )
        count = retries.requeue_failed(session, issue.id, now=now or utcnow())
        if count:
            outbox.set_issue_status(session, issue.id, IssueStatus.SENDING,
                                    only_from=(IssueStatus.SENT, IssueStatus.SENDING))
            issue = issue._replace(status=IssueStatus.SENDING)
    return issue, count


def _move_issue(db: Database, ref: str, to: IssueStatus, only_from: IssueStatus) -> IssueRef:
    """Change an issue's status if it is in only_from; SendError naming both otherwise."""
    issue = lookup_issue(db, ref)
    with db.write() as session:
        if not outbox.set_issue_status(session, issue.id, to, only_from=(only_from,)):
            raise SendError(f"issue {issue.number} ({issue.label}) is {issue.status}, "
                            f"not {only_from}; only a {only_from} issue can be "
                            f"{'paused' if to == IssueStatus.PAUSED else 'resumed'}")
    return issue._replace(status=to)


def pause_issue(db: Database, ref: str) -> IssueRef:
    """Pause a sending issue; running senders stop after their current batch."""
    return _move_issue(db, ref, IssueStatus.PAUSED, IssueStatus.SENDING)


def resume_issue(db: Database, ref: str) -> IssueRef:
    """Let a paused issue be sent again (by the next digest send)."""
    return _move_issue(db, ref, IssueStatus.SENDING, IssueStatus.PAUSED)


def cancel_issue(db: Database, ref: str) -> tuple[IssueRef, int]:
    """Cancel an unfinished issue for good: its pending rows become skipped."""
    issue = lookup_issue(db, ref)
    with db.write() as session:
        if not outbox.set_issue_status(
            session, issue.id, IssueStatus.CANCELLED,
            only_from=(IssueStatus.SENDING, IssueStatus.PAUSED),
        ):
            hint = (f"; delete a draft with digest issue discard {issue.label}"
                    if issue.status == IssueStatus.DRAFT else "")
            raise SendError(f"issue {issue.number} ({issue.label}) is {issue.status}; "
                            f"only a sending or paused issue can be cancelled{hint}")
        skipped = outbox.skip_unsent(session, issue.id, "issue cancelled")
    return issue._replace(status=IssueStatus.CANCELLED), skipped
