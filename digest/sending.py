"""The send engine: a crash-safe outbox of delivery rows, claimed and sent in small batches.

The whole state of a send lives in the ``deliveries`` table, one row per subscriber, so no
checkpoint can run ahead of what was really sent (listmonk #3022, #2070). A batch of at most
``send_inflight`` rows is committed ``inflight`` (with the sender's name and a lease) before
its messages are handed to the backend, and the results are committed right after. If the
sender dies in between, only those in-flight rows are uncertain; once their lease runs out
(or the sender's pid is seen dead on this host) they are sent again, with the same
Message-ID, so duplicates are bounded by the in-flight window and recognisable.

Several senders may work on one issue. On PostgreSQL they claim side by side with
``FOR UPDATE SKIP LOCKED``. On SQLite one sender at a time holds the issue's lease and a
second one waits briefly, then exits with a message saying who holds it.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from digest import subscribers
from digest.checks import CheckReport, check_issue
from digest.config import Settings
from digest.db import Database
from digest.errors import (
    CheckFailed,
    DigestError,
    InputError,
    LockedError,
    NotFoundError,
    SendError,
)
from digest.issues import (
    IssueContent,
    Window,
    content_of,
    freeze_issue,
    select_issue,
    window_for,
)
from digest.mail.base import BaseBackend, Outcome, OutgoingMessage, SendResult
from digest.message import DkimSigner, MessageTemplate, make_message_id
from digest.models import DeliveryStatus, Issue, IssueStatus, SubscriberStatus, utcnow
from digest.personalise import Recipient
from digest.preview import archive_url, sample_reader
from digest.ratelimit import RateLimiter
from digest.render import Renderer
from digest.schedule import Period, Schedule
from digest.store import issues as issue_store
from digest.store import outbox
from digest.store import subscribers as subscriber_store
from digest.tokens import preferences_url, unsubscribe_url

#: How long the send loop waits for retries or leases that fall due soon, before it exits
#: and leaves them to the next run.
DEFAULT_RETRY_WAIT = 10.0
#: How long a second sender on SQLite waits for the issue lease before giving up.
DEFAULT_LOCK_WAIT = 5.0
#: Retry delays vary by this fraction either way, so retries from one outage spread out.
JITTER = 0.2
# Bound on consecutive waits that found nothing to claim, so the loop always stops.
_MAX_IDLE_ROUNDS = 200

_WEEK_LABEL = re.compile(r"^\d{4}-W\d{2}$")
# RFC 3463 §3.3 X.1.x addressing status: 5.1.1 bad mailbox, 5.1.2 bad system (domain),
# 5.1.3 bad address syntax, 5.1.6 mailbox has moved, 5.1.10 null MX (RFC 7505). 5.1.7 and
# 5.1.8 are about the *sender's* address and say nothing about the subscriber.
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_BAD_MAILBOX_DETAILS = frozenset({1, 2, 3, 6, 10})
_UNKNOWN_USER = re.compile(
    r"user unknown|unknown user|no such (user|mailbox|recipient)|does not exist|"
    r"mailbox (not found|unavailable)|invalid (recipient|mailbox|address)|"
    r"recipient (address )?rejected|undeliverable address",
    re.IGNORECASE,
)


# ------------------------------------------------------------------------------ small helpers


def retry_delay(settings: Settings, attempts: int, *, rng: random.Random | None = None) -> float:
    """Seconds before retrying a row that has had attempts tries: base · 2^(attempts-1) ± 20 %."""
    base: float = settings.send_retry_base * 2.0 ** max(0, attempts - 1)
    return base * (1.0 + (rng or random).uniform(-JITTER, JITTER))


def is_bounce(code: int | None, text: str) -> bool:
    """True if a permanent reply says the address does not exist (so the subscriber bounced).

    An RFC 3463 enhanced status code decides when present (5.1.1 yes, 5.7.1 policy no);
    otherwise 551 and 553 (RFC 5321 §4.2.2: user not local, mailbox name not allowed) do, and
    550 only with a "user unknown"-like text, since 550 is also used for policy refusals.
    """
    if code not in (550, 551, 553):
        return False
    enhanced = _ENHANCED.search(text or "")
    if enhanced:
        return enhanced[1] == "5" and enhanced[2] == "1" and (
            int(enhanced[3]) in _BAD_MAILBOX_DETAILS
        )
    return code in (551, 553) or bool(_UNKNOWN_USER.search(text or ""))


def message_id_domain(settings: Settings) -> str:
    """The domain in generated Message-IDs: the DKIM domain, else the From address's."""
    domain = settings.dkim_domain.strip() or settings.from_email.rpartition("@")[2].strip()
    domain = domain.rstrip(">").strip() or "localhost"
    if not re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*", domain):
        raise InputError(f"cannot make Message-IDs for domain {domain!r}: check from_email")
    return domain


def worker_name(tag: str | None = None) -> str:
    """This sender's name in claims and leases: ``host:pid:tag``."""
    host = socket.gethostname().replace(":", "_")[:100]
    tag = (tag or secrets.token_hex(3)).replace(":", "_")[:60]
    return f"{host}:{os.getpid()}:{tag}"


def owner_pid(owner: str | None) -> tuple[str, int] | None:
    """(host, pid) from a sender name, or None if it is not one of ours."""
    parts = (owner or "").split(":")
    if len(parts) >= 3 and parts[1].isdigit():
        return parts[0], int(parts[1])
    return None


def owner_is_dead(owner: str | None) -> bool:
    """True when owner ran on this host and its process no longer exists.

    A sender on another host can only be presumed dead once its lease runs out.
    """
    parsed = owner_pid(owner)
    if parsed is None or parsed[0] != socket.gethostname().replace(":", "_")[:100]:
        return False
    if parsed[1] == os.getpid():
        return False
    try:
        os.kill(parsed[1], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _describe_owner(owner: str | None) -> str:
    parsed = owner_pid(owner)
    if parsed is None:
        return owner or "unknown"
    host, pid = parsed
    return f"pid {pid}" if host == socket.gethostname().replace(":", "_")[:100] else (
        f"pid {pid} on {host}"
    )


# ------------------------------------------------------------------------------ results


@dataclass(frozen=True, slots=True)
class Progress:
    """A progress event, sent after every batch."""

    number: int
    label: str
    sent: int
    failed: int
    pending: int  # pending or in flight
    total: int
    sent_now: int  # by this run
    elapsed: float  # seconds since this run started delivering

    @property
    def rate(self) -> float:
        """Messages per second handed over by this run."""
        return self.sent_now / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds until the rest is sent at the current rate, if known."""
        return self.pending / self.rate if self.rate > 0 else None


@dataclass(frozen=True, slots=True)
class SendSummary:
    """How an issue's send stands after a run."""

    issue_id: int
    number: int
    label: str
    status: str  # the issue's status afterwards
    counts: outbox.Counts
    created: bool = False  # this run created the issue and its deliveries
    sent_now: int = 0
    failed_now: int = 0
    retry_now: int = 0  # temporary failures rescheduled by this run
    bounced_now: int = 0
    retry_count: int = 0  # pending rows left, waiting for a later retry
    retry_after: datetime | None = None
    stopped: str | None = None  # "paused" or "cancelled" if the loop stopped for that
    elapsed: float = 0.0

    @property
    def line(self) -> str:
        """The one summary line, the same with or without a progress bar."""
        c = self.counts
        return (
            f"Issue {self.number} ({self.label}): {c.sent} sent, {c.failed} failed, "
            f"{c.unfinished} pending"
        )

    @property
    def retry_note(self) -> str | None:
        """What to do about rows waiting for a later retry, if any."""
        if not self.retry_count or self.retry_after is None or self.status != IssueStatus.SENDING:
            return None
        when = self.retry_after.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
        return (
            f"{self.retry_count} deliveries will be retried after {when}; "
            "run digest send again (cron --if-due does)"
        )

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, 3 when some deliveries failed permanently."""
        return 3 if self.counts.failed else 0


# ------------------------------------------------------------------------------ issues


class IssueRef(NamedTuple):
    """An issue's identity and status, detached from any session."""

    id: int
    number: int
    label: str
    status: str
    window_start: datetime
    window_end: datetime


def _ref(issue: Issue) -> IssueRef:
    return IssueRef(issue.id, issue.number, issue.label, issue.status, issue.window_start,
                    issue.window_end)


def find_issue(session: Session, window: Window) -> Issue | None:
    """The issue for this window, or for the same ISO week label (never two for one week)."""
    issue = issue_store.issue_for_window(session, window.start, window.end)
    if issue is None and _WEEK_LABEL.match(window.label):
        issue = issue_store.issue_by_label(session, window.label)
    return issue


def lookup_issue(db: Database, ref: str) -> IssueRef:
    """An issue by label (2025-W47) or number; NotFoundError says how to list them."""
    with db.read() as session:
        issue = issue_store.issue_by_label(session, ref.strip())
        if issue is None:
            raise NotFoundError(f"no issue {ref!r}; run `digest issues` to list them")
        return _ref(issue)


def gate(report: CheckReport, *, force: bool) -> None:
    """The send gate: errors always stop a send; warnings stop it unless forced."""
    if report.errors:
        raise CheckFailed(
            "the issue did not pass the check:\n  " + "\n  ".join(report.errors)
            + "\nfix these and run digest send again"
        )
    if report.warnings and not force:
        raise CheckFailed(
            "the check has warnings:\n  " + "\n  ".join(report.warnings)
            + "\nreview them (digest check) and re-run with --force to send anyway"
        )


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
                if existing is not None:
                    return _ref(existing), False
                issue = freeze_issue(session, content)
                outbox.create_deliveries(session, issue.id, domain=domain, now=now or utcnow())
                return _ref(issue), True
        except IntegrityError:
            # Lost a race with another `digest send`: read what it created.
            time.sleep(random.uniform(0.05, 0.2))
    raise SendError("could not create the issue: another process keeps creating issues; retry")


# ------------------------------------------------------------------------------ the sender


class _Key(NamedTuple):
    id: int
    email_key: str


class Sender:
    """Delivers one issue's outbox through one backend: claim, send, record, repeat."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        backend: BaseBackend,
        *,
        rate: float | None = None,
        worker_id: str | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        retry_wait: float = DEFAULT_RETRY_WAIT,
        lock_wait: float = DEFAULT_LOCK_WAIT,
        renderer: Renderer | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.db = db
        self.settings = settings
        self.backend = backend
        self.owner = worker_name(worker_id)
        self.on_progress = on_progress
        self.retry_wait = retry_wait
        self.lock_wait = lock_wait
        self.renderer = renderer or Renderer(settings)
        self.signer = DkimSigner.from_settings(settings)
        self._sleep = sleep
        rate = rate if rate is not None else (settings.send_rate or None)
        self.limiter = RateLimiter(db, rate, max_chunk=settings.send_inflight) if rate else None
        self.batch_size = max(1, min(settings.send_inflight, settings.send_batch))
        if rate:
            # Keep one batch well inside the lease, however slow the rate.
            self.batch_size = max(1, min(self.batch_size,
                                         int(rate * settings.send_lease_seconds / 4)))
        self._templates: dict[frozenset[str] | None, MessageTemplate | None] = {}
        self._content: IssueContent | None = None

    # ---- templates

    def template(self, content: IssueContent, sections: Sequence[str]) -> MessageTemplate | None:
        """The MessageTemplate for a section choice (None: nothing in those sections), cached."""
        if content is not self._content:
            self._templates.clear()
            self._content = content
        variant = self.renderer.variant_key(content, sections)
        if variant not in self._templates:
            compiled = self.renderer.compile(content, variant)
            self._templates[variant] = None if compiled.is_empty else MessageTemplate(
                compiled.subject, compiled.html, compiled.text, self.settings, signer=self.signer
            )
        return self._templates[variant]

    def recipient(self, row: outbox.ClaimedDelivery, label: str) -> Recipient:
        """The personal values of one reader."""
        key = _Key(row.subscriber_id or 0, row.email_key)
        return Recipient(
            email=row.email,
            name=row.name,
            unsubscribe_url=unsubscribe_url(self.settings, key),
            preferences_url=preferences_url(self.settings, key),
            view_url=archive_url(self.settings, label),
        )

    # ---- the loop

    def run(self, issue: IssueRef) -> SendSummary:
        """Send every claimable row of the issue; stop when none is due soon, or on pause."""
        with self.db.read() as session:
            content = content_of(session, session.get_one(Issue, issue.id))
        started = time.monotonic()
        with self.db.read() as session:
            start_counts = outbox.counts(session, issue.id)
        tally = _Tally()
        stopped: str | None = None
        holds_lease = False
        try:
            if self.db.is_sqlite:
                self._take_issue_lease(issue)
                holds_lease = True
            self._release_dead_claims(issue)
            idle = 0
            while True:
                now = utcnow()
                with self.db.write() as session:
                    status, _, _ = outbox.issue_status(session, issue.id)
                    if status != IssueStatus.SENDING:
                        stopped = status
                        break
                    if holds_lease and not outbox.take_issue_lease(
                        session, issue.id, self.owner, now=now,
                        until=outbox.lease_for(self.settings.send_lease_seconds, now),
                    ):
                        raise LockedError(
                            f"lost the send lease of issue {issue.number} to another digest "
                            "send (this one stalled longer than send_lease_seconds); exiting"
                        )
                    rows = outbox.claim_batch(
                        session, issue.id, self.owner, limit=self.batch_size, now=now,
                        lease_until=outbox.lease_for(self.settings.send_lease_seconds, now),
                    )
                if rows:
                    idle = 0
                    self._deliver(issue, content, rows, tally)
                    self._progress(issue, start_counts, tally, started)
                    continue
                with self.db.read() as session:
                    due = outbox.next_due(session, issue.id)
                wait = (due - utcnow()).total_seconds() if due is not None else None
                if wait is None or wait > self.retry_wait or idle >= _MAX_IDLE_ROUNDS:
                    break
                idle += 1
                # Wake up at least twice per lease, to renew it.
                self._sleep(min(max(wait, 0.02), self.settings.send_lease_seconds / 2))
            if stopped == IssueStatus.CANCELLED:
                with self.db.write() as session:
                    outbox.skip_unsent(session, issue.id, "issue cancelled")
        finally:
            if holds_lease:
                with self.db.write() as session:
                    outbox.release_issue_lease(session, issue.id, self.owner)
        return self._summary(issue, tally, stopped, started)

    def _take_issue_lease(self, issue: IssueRef) -> None:
        """SQLite: become the issue's only sender, waiting up to lock_wait for another."""
        deadline = time.monotonic() + self.lock_wait
        while True:
            now = utcnow()
            until = outbox.lease_for(self.settings.send_lease_seconds, now)
            with self.db.write() as session:
                if outbox.take_issue_lease(session, issue.id, self.owner, now=now, until=until):
                    return
                _, holder, _ = outbox.issue_status(session, issue.id)
                if owner_is_dead(holder) and outbox.take_issue_lease(
                    session, issue.id, self.owner, now=now, until=until, steal_from=holder
                ):
                    return
            if time.monotonic() >= deadline:
                raise LockedError(
                    f"another digest send ({_describe_owner(holder)}) is sending issue "
                    f"{issue.number} ({issue.label}); exiting"
                )
            self._sleep(min(0.5, max(0.05, deadline - time.monotonic())))

    def _release_dead_claims(self, issue: IssueRef) -> None:
        """Rows claimed by a sender that died on this host are re-sent now, not after the lease."""
        with self.db.read() as session:
            owners = outbox.claim_owners(session, issue.id)
        dead = [owner for owner, _, _ in owners if owner != self.owner and owner_is_dead(owner)]
        if dead:
            with self.db.write() as session:
                for owner in dead:
                    outbox.release_owner(session, issue.id, owner, now=utcnow())

    def _deliver(
        self, issue: IssueRef, content: IssueContent, rows: list[outbox.ClaimedDelivery],
        tally: _Tally,
    ) -> None:
        """Hand one claimed batch to the backend and record every result in one transaction."""
        skipped: list[tuple[int, str]] = []
        results: list[outbox.ResultRow] = []
        messages: list[OutgoingMessage] = []
        claimed: dict[str, outbox.ClaimedDelivery] = {}
        for row in rows:
            if row.subscriber_status != SubscriberStatus.ACTIVE:
                why = row.subscriber_status or "erased"
                skipped.append((row.id, f"subscriber is {why}"))
                continue
            template = self.template(content, row.sections)
            if template is None:
                skipped.append((row.id, "no articles in the reader's sections this issue"))
                continue
            try:
                message = template.build_outgoing(self.recipient(row, issue.label), row.message_id)
            except InputError as exc:
                # An address or link that cannot go into a header: no retry will fix it.
                results.append(outbox.ResultRow(row.id, DeliveryStatus.FAILED, None, str(exc)))
                tally.failed += 1
                continue
            messages.append(message)
            claimed[message.message_id] = row

        sent: list[SendResult] = []
        try:
            step = self.limiter.chunk if self.limiter else len(messages) or 1
            for start in range(0, len(messages), step):
                chunk = messages[start:start + step]
                if self.limiter:
                    self.limiter.acquire(len(chunk))
                chunk_results = self.backend.send_messages(chunk)
                if len(chunk_results) != len(chunk):
                    raise SendError(
                        f"mail backend {self.backend.name!r} returned {len(chunk_results)} "
                        f"results for {len(chunk)} messages"
                    )
                sent.extend(chunk_results)
        finally:
            # Also on Ctrl-C or a backend bug: keep what is known, and let the next run
            # re-send the uncertain rest at once (same Message-IDs) instead of after the lease.
            uncertain = [claimed[m.message_id].id for m in messages[len(sent):]]
            self._record(claimed, sent, results, skipped, uncertain, tally)

    def _record(
        self,
        claimed: dict[str, outbox.ClaimedDelivery],
        sent: Sequence[SendResult],
        results: list[outbox.ResultRow],
        skipped: list[tuple[int, str]],
        uncertain: list[int],
        tally: _Tally,
    ) -> None:
        now = utcnow()
        bounced: list[outbox.ClaimedDelivery] = []
        for result in sent:
            row = claimed[result.message_id]
            reply = (f"{result.code} " if result.code else "") + result.text
            if result.outcome is Outcome.SENT:
                results.append(outbox.ResultRow(row.id, DeliveryStatus.SENT, result.code, reply))
                tally.sent += 1
            elif (
                result.outcome is Outcome.TEMPORARY
                and row.attempts < self.settings.send_max_attempts
            ):
                when = now + timedelta(seconds=retry_delay(self.settings, row.attempts))
                results.append(
                    outbox.ResultRow(row.id, DeliveryStatus.PENDING, result.code, reply, when)
                )
                tally.retry += 1
            else:
                if result.outcome is Outcome.TEMPORARY:
                    reply = f"gave up after {row.attempts} attempts: {reply}"
                results.append(outbox.ResultRow(row.id, DeliveryStatus.FAILED, result.code, reply))
                tally.failed += 1
                if (
                    result.outcome is Outcome.PERMANENT
                    and row.subscriber_id is not None
                    and is_bounce(result.code, result.text)
                ):
                    bounced.append(row)
        tally.skipped += len(skipped)
        with self.db.write() as session:
            outbox.record_results(session, self.owner, results, now=now)
            for reason in {why for _, why in skipped}:
                outbox.skip_deliveries(
                    session, self.owner, [i for i, why in skipped if why == reason], reason
                )
            if uncertain:
                outbox.expire_claims(session, uncertain, self.owner, now=now)
            for row in bounced:
                # The address does not exist: suppress it, so it is not re-imported either.
                try:
                    subscribers.suppress(session, row.email, SubscriberStatus.BOUNCED, now)
                except InputError:
                    outbox.mark_bounced(session, [row.subscriber_id or 0], now=now)
                tally.bounced += 1

    def _progress(self, issue: IssueRef, base: outbox.Counts, tally: _Tally,
                  started: float) -> None:
        if self.on_progress is None:
            return
        pending = max(0, base.unfinished - tally.sent - tally.failed - tally.skipped)
        self.on_progress(
            Progress(
                number=issue.number,
                label=issue.label,
                sent=base.sent + tally.sent,
                failed=base.failed + tally.failed,
                pending=pending,
                total=base.total,
                sent_now=tally.sent,
                elapsed=time.monotonic() - started,
            )
        )

    def _summary(self, issue: IssueRef, tally: _Tally, stopped: str | None,
                 started: float) -> SendSummary:
        now = utcnow()
        with self.db.write() as session:
            outbox.finish_issue(session, issue.id, now=now)
        with self.db.read() as session:
            status, _, _ = outbox.issue_status(session, issue.id)
            counts = outbox.counts(session, issue.id)
            retry_count, retry_after = outbox.next_retry(session, issue.id)
        return SendSummary(
            issue_id=issue.id,
            number=issue.number,
            label=issue.label,
            status=status,
            counts=counts,
            sent_now=tally.sent,
            failed_now=tally.failed,
            retry_now=tally.retry,
            bounced_now=tally.bounced,
            retry_count=retry_count,
            retry_after=retry_after,
            stopped=stopped if stopped in (IssueStatus.PAUSED, IssueStatus.CANCELLED) else None,
            elapsed=time.monotonic() - started,
        )


@dataclass
class _Tally:
    sent: int = 0
    failed: int = 0
    retry: int = 0
    skipped: int = 0
    bounced: int = 0


# ------------------------------------------------------------------------------ entry points


@dataclass(frozen=True, slots=True)
class IssueOptions:
    """Choices for a new issue (ignored when the issue exists already)."""

    include_sent: bool = False
    intro: str = ""
    subject: str = ""
    preheader: str = ""


def default_window(db: Database, settings: Settings, *, now: datetime | None = None) -> Window:
    """What ``digest send`` sends without --week/--since/--until.

    An unfinished (sending) issue first, so a rerun after a crash resumes it; otherwise the
    window from the end of the last sent issue to now. A paused issue must be resumed or
    cancelled first, so that it is not silently overtaken by a new one.
    """
    with db.read() as session:
        unfinished = issue_store.unfinished_issues(session)
        if unfinished:
            issue = unfinished[0]
            if issue.status == IssueStatus.PAUSED:
                raise SendError(
                    f"issue {issue.number} ({issue.label}) is paused: run `digest issues resume "
                    f"{issue.label}` and digest send again, or cancel it"
                )
            return Window(issue.window_start, issue.window_end, issue.label)
        return window_for(session, settings, now=now)


@dataclass
class Prepared:
    """What ``digest send`` found before sending: the issue's content, and whether it exists."""

    window: Window
    content: IssueContent
    existing: IssueRef | None
    report: CheckReport | None = None  # the gate's findings, for a new issue
    subscribers: int = 0


def prepare(
    db: Database, settings: Settings, window: Window, *, content: IssueContent | None = None,
    options: IssueOptions | None = None, renderer: Renderer | None = None, check: bool = True,
) -> Prepared:
    """Read the window's issue (existing, or the one that would be frozen) and check it."""
    options = options or IssueOptions()
    with db.read() as session:
        existing = find_issue(session, window)
        if existing is not None:
            return Prepared(window, content_of(session, existing), _ref(existing))
        if content is None:
            content = select_issue(
                session, settings, window, include_sent=options.include_sent,
                intro=options.intro, subject=options.subject, preheader=options.preheader,
            )
        subscribers = subscriber_store.count(session, SubscriberStatus.ACTIVE)
    report = None
    if check:
        renderer = renderer or Renderer(settings)
        report = check_issue(renderer.compile(content, None), content, settings)
    return Prepared(window, content, None, report, subscribers)


def send_issue(
    db: Database,
    settings: Settings,
    window: Window | None = None,
    *,
    content: IssueContent | None = None,
    options: IssueOptions | None = None,
    backend: BaseBackend | None = None,
    force: bool = False,
    check: bool = True,
    rate: float | None = None,
    worker_id: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_check: Callable[[CheckReport], None] | None = None,
    retry_wait: float = DEFAULT_RETRY_WAIT,
    lock_wait: float = DEFAULT_LOCK_WAIT,
) -> SendSummary:
    """Create (or resume) the issue for window and deliver it; the library face of digest send.

    A new issue passes the check first (errors always stop it, warnings unless force). The
    backend is opened before anything is written, so a wrong host or password fails with
    BackendConfigError and no row. Give window, or content (its window is used).
    """
    if window is None:
        if content is None:
            raise InputError("send_issue needs a window or the issue content")
        window = Window(content.window_start, content.window_end, content.label)
    renderer = Renderer(settings)
    prepared = prepare(db, settings, window, content=content, options=options,
                       renderer=renderer, check=check)
    if prepared.report is not None:
        if on_check is not None:
            on_check(prepared.report)
        gate(prepared.report, force=force)
    if prepared.existing is not None and prepared.existing.status != IssueStatus.SENDING:
        return summarise(db, prepared.existing)
    if prepared.existing is None and prepared.subscribers == 0:
        # Creating the issue would mark its articles as gone out, to nobody.
        raise SendError(
            "there are no active subscribers, so nothing was sent and no issue was created; "
            "add some with `digest subscribers add` or `digest subscribers import`"
        )
    if backend is None:
        from digest.mail import get_backend

        backend = get_backend(settings)
    sender = Sender(db, settings, backend, rate=rate, worker_id=worker_id,
                    on_progress=on_progress, retry_wait=retry_wait, lock_wait=lock_wait,
                    renderer=renderer)
    # Building the main template first turns a bad from_email, list_id or DKIM key into an
    # error before any connection is opened or any row is written.
    sender.template(prepared.content, ())
    backend.open()
    try:
        created = False
        issue = prepared.existing
        if issue is None:
            issue, created = create_issue(db, settings, window, prepared.content)
        summary = sender.run(issue)
    finally:
        backend.close()
    if created:
        summary = replace(summary, created=True)
    return summary


def summarise(db: Database, issue: IssueRef) -> SendSummary:
    """The state of an issue's send, without sending anything."""
    with db.read() as session:
        status, _, _ = outbox.issue_status(session, issue.id)
        counts = outbox.counts(session, issue.id)
        retry_count, retry_after = outbox.next_retry(session, issue.id)
    return SendSummary(
        issue_id=issue.id, number=issue.number, label=issue.label, status=status, counts=counts,
        retry_count=retry_count, retry_after=retry_after,
        stopped=status if status in (IssueStatus.PAUSED, IssueStatus.CANCELLED) else None,
    )


# ------------------------------------------------------------------------------ schedule


@dataclass(frozen=True, slots=True)
class DueCheck:
    """What ``digest send --if-due`` should do now."""

    action: str  # "send", "resume", "sent", "paused", "cancelled", "stale"
    period: Period
    issue: IssueRef | None
    message: str


def check_due(db: Database, settings: Settings, *, now: datetime | None = None,
              force: bool = False) -> DueCheck:
    """Decide whether the current period's issue should be sent, resumed, or left alone."""
    now = now or utcnow()
    period = Schedule.from_settings(settings).period(now)
    with db.read() as session:
        found = find_issue(session, period.window)
        issue = _ref(found) if found is not None else None
    label = period.window.label
    due = period.due_at.astimezone(Schedule.from_settings(settings).tz)
    due_text = f"{due:%a %Y-%m-%d %H:%M %Z}"
    if issue is not None and issue.status == IssueStatus.SENT:
        return DueCheck("sent", period, issue, f"Issue {issue.number} ({label}) already sent.")
    if issue is not None and issue.status in (IssueStatus.PAUSED, IssueStatus.CANCELLED):
        return DueCheck(
            issue.status, period, issue, f"Issue {issue.number} ({label}) is {issue.status}."
        )
    if period.is_stale(now) and not force:
        if issue is not None:
            return DueCheck(
                "stale", period, issue,
                f"not resuming issue {issue.number} ({label}): it was due {due_text}, more "
                f"than {settings.schedule_grace_hours:g} h ago (schedule_grace_hours). If this "
                "database was restored from a backup, some of its pending rows may have gone "
                f"out already. Cancel it (digest issues cancel {label}) or resume it anyway "
                "(digest send --if-due --force)",
            )
        return DueCheck(
            "stale", period, None,
            f"Nothing due: the {label} issue was due {due_text}, more than "
            f"{settings.schedule_grace_hours:g} h ago (schedule_grace_hours), so that week is "
            "skipped. To send it anyway: digest send --if-due --force",
        )
    action = "resume" if issue is not None else "send"
    return DueCheck(action, period, issue, f"Issue for {label} was due {due_text}.")


# ------------------------------------------------------------------------------ dry run, test


@dataclass(frozen=True, slots=True)
class Variant:
    """One section variant in a dry run: who gets it and what it looks like."""

    sections: tuple[str, ...]  # empty: every section
    subscribers: int
    subject: str
    message_bytes: int
    empty: bool


@dataclass(frozen=True, slots=True)
class DryRun:
    """What digest send would do, computed without sending or writing anything."""

    number: int
    label: str
    window: Window
    existing: IssueRef | None
    subscribers: int
    variants: tuple[Variant, ...]
    report: CheckReport | None
    counts: outbox.Counts | None = None

    @property
    def lines(self) -> list[str]:
        """Human lines for the CLI."""
        out = []
        if self.existing is not None and self.counts is not None:
            c = self.counts
            out.append(
                f"Issue {self.number} ({self.label}) exists ({self.existing.status}): "
                f"{c.sent} sent, {c.failed} failed, {c.unfinished} pending; a send would "
                f"deliver the {c.unfinished} pending."
            )
        else:
            out.append(
                f"Dry run: issue {self.number} ({self.label}) would go to {self.subscribers} "
                f"subscriber(s) in {len(self.variants)} variant(s); nothing was sent or written."
            )
        for v in self.variants:
            who = ", ".join(v.sections) if v.sections else "all sections"
            if v.empty:
                out.append(f"  {v.subscribers:>7}  {who}: nothing to send (skipped)")
            else:
                out.append(f"  {v.subscribers:>7}  {who}: “{v.subject}”, "
                           f"{v.message_bytes / 1024:.1f} KB")
        return out


def dry_run(db: Database, settings: Settings, window: Window, *,
            content: IssueContent | None = None, options: IssueOptions | None = None) -> DryRun:
    """Render every section variant in use and count recipients; nothing is sent or written."""
    renderer = Renderer(settings)
    prepared = prepare(db, settings, window, content=content, options=options,
                       renderer=renderer)
    with db.read() as session:
        choices = outbox.section_choices(session)
        counts = outbox.counts(session, prepared.existing.id) if prepared.existing else None
    by_variant: dict[frozenset[str] | None, tuple[tuple[str, ...], int]] = {}
    for raw, count in choices:
        try:
            sections = [str(s) for s in json.loads(raw) or ()]
        except ValueError:
            sections = []
        key = renderer.variant_key(prepared.content, sections)
        names, before = by_variant.get(key, (tuple(sorted(sections)) if key else (), 0))
        by_variant[key] = (names, before + count)
    sample = sample_reader(settings, prepared.content.label)
    signer = DkimSigner.from_settings(settings)
    variants = []
    for key, (names, count) in sorted(by_variant.items(), key=lambda kv: -kv[1][1]):
        compiled = renderer.compile(prepared.content, key)
        size = 0
        if not compiled.is_empty:
            template = MessageTemplate(compiled.subject, compiled.html, compiled.text, settings,
                                       signer=signer)
            size = len(template.build(sample, make_message_id(message_id_domain(settings))))
        variants.append(Variant(names, count, compiled.subject, size, compiled.is_empty))
    return DryRun(
        number=prepared.existing.number if prepared.existing else prepared.content.number,
        label=prepared.content.label,
        window=window,
        existing=prepared.existing,
        subscribers=sum(v.subscribers for v in variants),
        variants=tuple(variants),
        report=prepared.report,
        counts=counts,
    )


def send_test(
    db: Database, settings: Settings, window: Window, to: str, *,
    backend: BaseBackend | None = None, content: IssueContent | None = None,
    options: IssueOptions | None = None,
) -> SendResult:
    """Send one test copy to ``to`` (subject prefixed [TEST]) without recording a delivery.

    The copy is personalised as that subscriber if the address is on the list, else as a
    sample reader whose links lead nowhere.
    """
    prepared = prepare(db, settings, window, content=content, options=options, check=False)
    key = to.strip().lower()
    with db.read() as session:
        person = subscriber_store.get_by_key(session, key)
        ident = _Key(person.id, person.email_key) if person else _Key(0, key)
        name = person.name if person else "Sample Reader"
        sections = list(person.sections or ()) if person else []
    renderer = Renderer(settings)
    compiled = renderer.compile(prepared.content, sections)
    if compiled.is_empty:
        compiled = renderer.compile(prepared.content, None)
    template = MessageTemplate("[TEST] " + compiled.subject, compiled.html, compiled.text,
                               settings)
    recipient = Recipient(
        email=to.strip(), name=name,
        unsubscribe_url=unsubscribe_url(settings, ident),
        preferences_url=preferences_url(settings, ident),
        view_url=archive_url(settings, prepared.content.label),
    )
    message = template.build_outgoing(recipient, make_message_id(message_id_domain(settings)))
    if backend is None:
        from digest.mail import get_backend

        backend = get_backend(settings)
    with backend:
        return backend.send_messages([message])[0]


# ------------------------------------------------------------------------------ control


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


def list_issues(db: Database) -> list[tuple[IssueRef, outbox.Counts]]:
    """Every issue, newest first, with its delivery counts."""
    with db.read() as session:
        issues = issue_store.list_issues(session)
        counts = outbox.all_counts(session)
        return [(_ref(i), counts.get(i.id, outbox.Counts())) for i in issues]


def issue_details(db: Database, ref: str, *, errors: int = 10,
                  settings: Settings | None = None) -> IssueDetails:
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
        )


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
            raise SendError(f"issue {issue.number} ({issue.label}) is {issue.status}; "
                            "only a sending or paused issue can be cancelled")
        skipped = outbox.skip_unsent(session, issue.id, "issue cancelled")
    return issue._replace(status=IssueStatus.CANCELLED), skipped
