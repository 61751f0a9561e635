"""The send loop: claim a batch of deliveries, hand it to the backend, record the results."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy.exc import SQLAlchemyError

from digest import subscribers
from digest.config import Settings
from digest.db import Database, describe_error
from digest.errors import (
    InputError,
    LockedError,
    SendError,
)
from digest.issues import (
    IssueContent,
    content_of,
)
from digest.mail.base import BaseBackend, Outcome, OutgoingMessage, SendResult
from digest.message import DkimSigner, MessageTemplate
from digest.models import DeliveryStatus, Issue, IssueStatus, SubscriberStatus, utcnow
from digest.personalise import Recipient
from digest.preview import archive_url
from digest.ratelimit import RateLimiter
from digest.render import Renderer
from digest.sending.control import IssueRef, complete_outbox
from digest.sending.policy import retry_delay
from digest.sending.results import Progress, SendSummary, outcome_details
from digest.sending.waves import Timing
from digest.sending.workers import describe_owner, owner_is_dead, worker_name
from digest.store import outbox
from digest.tokens import preferences_url, unsubscribe_url

#: How long the send loop waits for retries or leases that fall due soon, before it exits
#: and leaves them to the next run.
DEFAULT_RETRY_WAIT = 10.0
#: How long a second sender on SQLite waits for the issue lease before giving up.
DEFAULT_LOCK_WAIT = 5.0
# Bound on consecutive waits that found nothing to claim, so the loop always stops.
_MAX_IDLE_ROUNDS = 200

log = logging.getLogger(__name__)




class ReaderKey(NamedTuple):
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
        clock: Callable[[], datetime] = utcnow,
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
        # Every "now" the loop stores or compares comes from here, so tests can pass a fake
        # clock (the local-time waves span 26 hours) instead of waiting.
        self._clock = clock
        self.timing = Timing.from_settings(settings)
        rate = rate if rate is not None else (settings.send_rate or None)
        self.limiter = RateLimiter(db, rate, max_chunk=settings.send_inflight) if rate else None
        # Two batches are in flight at a time (one on the wire, the next one claimed), so
        # each is half of send_inflight: a crash still repeats at most send_inflight rows.
        self.batch_size = max(1, min(settings.send_inflight // 2, settings.send_batch))
        if rate:
            # Keep one batch well inside the lease, however slow the rate.
            self.batch_size = max(1, min(self.batch_size,
                                         int(rate * settings.send_lease_seconds / 4)))
        self._templates: dict[frozenset[str] | None, MessageTemplate | None] = {}
        self._content: IssueContent | None = None
        self._cursor = self._new_cursor()

    def _new_cursor(self) -> outbox.ClaimCursor:
        # Expired leases are looked for four times per lease (and whenever a claim comes up
        # short), so a dead sender's rows wait at most a quarter lease longer than before.
        return outbox.ClaimCursor(timedelta(seconds=self.settings.send_lease_seconds / 4))

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
                compiled.subject, compiled.html, compiled.text, self.settings, signer=self.signer,
                issue=content.label,
            )
        return self._templates[variant]

    def recipient(self, row: outbox.ClaimedDelivery, label: str) -> Recipient:
        """The personal values of one reader."""
        key = ReaderKey(row.subscriber_id or 0, row.email_key)
        return Recipient(
            email=row.email,
            name=row.name,
            unsubscribe_url=unsubscribe_url(self.settings, key),
            preferences_url=preferences_url(self.settings, key),
            view_url=archive_url(self.settings, label),
        )

    # ---- the loop

    def run(self, issue: IssueRef) -> SendSummary:
        """Send every claimable row of the issue; stop when none is due soon, or on pause.

        The stages overlap: while one batch is on the wire, a database thread records the
        previous batch and claims and builds the next one (the drivers release the GIL while
        they wait on the database). Every row is still committed in flight before its message
        reaches the backend. The database thread records batch k-1 before it claims k+1, so
        at most two batches (send_inflight rows) are in flight, and only they can repeat.
        """
        with self.db.read() as session:
            content = content_of(session, session.get_one(Issue, issue.id))
        self._cursor = self._new_cursor()
        started = time.monotonic()
        with self.db.read() as session:
            start_counts = outbox.expected_counts(session, issue.id)
        tally = _Tally()
        stopped: str | None = None
        holds_lease = False
        db_thread = ThreadPoolExecutor(1, "digest-db")
        upcoming: Future[_Batch | str | None] | None = None
        records: list[Future[None]] = []
        try:
            if self.db.is_sqlite:
                self._take_issue_lease(issue)
                holds_lease = True
            self._release_dead_claims(issue)
            report = functools.partial(self._progress, issue, start_counts, tally, started)
            idle = 0
            upcoming = db_thread.submit(self._claim_and_build, issue, content, holds_lease)
            while upcoming is not None:
                claimed = upcoming.result()
                upcoming = None
                _raise_finished(records)  # a failed record stops the send here
                if isinstance(claimed, str):
                    stopped = claimed
                    break
                if claimed is None:
                    # next_due must see the previous batches' retries and leases.
                    _raise_finished(records, wait=True)
                    self._release_dead_claims(issue)
                    if complete_outbox(self.db, self.settings, issue.id, chunks=1):
                        # The rest of the list arrived (made here, or waited for).
                        upcoming = db_thread.submit(self._claim_and_build, issue, content,
                                                    holds_lease)
                        continue
                    with self.db.read() as session:
                        due = outbox.next_due(session, issue.id)
                        # A pause or cancel may have landed between the claim's status check
                        # and its query (READ COMMITTED), leaving nothing to claim.
                        status, _, _ = outbox.issue_status(session, issue.id)
                    if status != IssueStatus.SENDING:
                        stopped = str(status)
                        break
                    wait = (due - self._clock()).total_seconds() if due is not None else None
                    if wait is None or wait > self.retry_wait or idle >= _MAX_IDLE_ROUNDS:
                        break
                    idle += 1
                    # Wake up at least twice per lease, to renew it.
                    self._sleep(min(max(wait, 0.02), self.settings.send_lease_seconds / 2))
                    upcoming = db_thread.submit(self._claim_and_build, issue, content,
                                                holds_lease)
                    continue
                idle = 0
                upcoming = db_thread.submit(self._claim_and_build, issue, content, holds_lease)
                sent: list[SendResult] = []
                try:
                    self._send(claimed, sent)
                finally:
                    # Also on Ctrl-C or a backend bug: keep what is known, and let the next
                    # run re-send the uncertain rest at once (same Message-IDs).
                    records.append(db_thread.submit(self._record, claimed, sent, tally, report))
            _raise_finished(records, wait=True)
            if stopped == IssueStatus.CANCELLED:
                with self.db.write() as session:
                    outbox.skip_unsent(session, issue.id, "issue cancelled")
        except SQLAlchemyError as exc:
            # Typically after the mail server's 250: the results of the batch in flight
            # could not be stored. Its rows stay in flight, so nothing is lost or doubled
            # beyond that batch, which a rerun resends with the same Message-IDs.
            raise SendError(
                f"{describe_error(exc, self.db.url)}. {tally.sent} deliveries were sent and "
                f"recorded in this run; {self._in_flight(issue)} left in flight are the "
                "only ones whose outcome is not stored. Once the database can be written "
                "again, run digest send again: it resends only those (with the same "
                "Message-IDs, so receivers can drop a copy) and then the rest"
            ) from None
        finally:
            self._drain(upcoming, records)
            db_thread.shutdown(wait=True)
            if holds_lease:
                # A lease that cannot be released here simply expires.
                with contextlib.suppress(SQLAlchemyError), self.db.write() as session:
                    outbox.release_issue_lease(session, issue.id, self.owner)
        return self._summary(issue, tally, stopped, started)

    def _in_flight(self, issue: IssueRef) -> str:
        """How many of the issue's rows are in flight, as words (the database may refuse)."""
        try:
            with self.db.read() as session:
                count = outbox.counts(session, issue.id).inflight
        except SQLAlchemyError:
            return "the deliveries"
        return f"the {count} deliveries"

    def _drain(self, upcoming: Future[_Batch | str | None] | None,
               records: list[Future[None]]) -> None:
        """After an error: finish the records in progress; free a claimed batch never sent."""
        for record in records:
            try:
                record.result()
            except SQLAlchemyError:
                pass  # the first error is already on its way up, and names the cause
            except Exception:  # the first error is already on its way up
                log.exception("recording a batch failed while stopping")
        if upcoming is None:
            return
        try:
            claimed = upcoming.result()
        except Exception:  # the error that stopped the loop is raised instead
            return
        if isinstance(claimed, _Batch) and claimed.rows:
            # If the database refuses this too, the rows wait for their lease to end.
            with contextlib.suppress(SQLAlchemyError), self.db.write() as session:
                outbox.unclaim(session, [r.id for r in claimed.rows], self.owner)

    def _take_issue_lease(self, issue: IssueRef) -> None:
        """SQLite: become the issue's only sender, waiting up to lock_wait for another."""
        deadline = time.monotonic() + self.lock_wait
        while True:
            now = self._clock()
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
                    f"another digest send ({describe_owner(holder)}) is sending issue "
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
                    outbox.release_owner(session, issue.id, owner, now=self._clock())

    def _claim_and_build(self, issue: IssueRef, content: IssueContent,
                         holds_lease: bool) -> _Batch | str | None:
        """Claim the next batch (committed in flight) and build its messages.

        Returns the batch, None when nothing is claimable now, or the issue's status when
        it is no longer sending (paused or cancelled from another terminal).
        """
        now = self._clock()
        while True:
            with self.db.write() as session:
                status, _, _ = outbox.issue_status(session, issue.id)
                if status != IssueStatus.SENDING:
                    return str(status)
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
                    cursor=self._cursor,
                )
                held = self._closed(rows, now)
                if held:
                    outbox.hold_deliveries(session, self.owner, held)
                    shut = {row_id for row_id, _ in held}
                    rows = [row for row in rows if row.id not in shut]
            # A batch of only held rows moved them all past now, so this loop ends within
            # as many rounds as there are rows; other rows may still be due now.
            if rows or not held:
                break
        if not rows:
            return None
        return self._build(issue, content, rows)

    def _closed(self, rows: list[outbox.ClaimedDelivery],
                now: datetime) -> list[tuple[int, datetime]]:
        """(row, when its window opens) for claimed rows whose reader's send window is shut."""
        if self.timing.window is None:
            return []
        opens = ((row.id, self.timing.open_at(now, row.timezone)) for row in rows)
        return [(row_id, when) for row_id, when in opens if when > now]

    def _build(self, issue: IssueRef, content: IssueContent,
               rows: list[outbox.ClaimedDelivery]) -> _Batch:
        """Personalise one claimed batch; rows that cannot be sent are set aside with why."""
        batch = _Batch(rows)
        for row in rows:
            if row.subscriber_status != SubscriberStatus.ACTIVE:
                why = row.subscriber_status or "erased"
                batch.skipped.append((row.id, f"subscriber is {why}"))
                continue
            template = self.template(content, row.sections)
            if template is None:
                batch.skipped.append((row.id, "no articles in the reader's sections this issue"))
                continue
            try:
                message = template.build_outgoing(
                    self.recipient(row, issue.label), row.message_id, delivery_id=row.id
                )
            except InputError as exc:
                # An address or link that cannot go into a header: no retry will fix it.
                batch.results.append(
                    outbox.ResultRow(row.id, DeliveryStatus.FAILED, None, str(exc))
                )
                batch.failed += 1
                continue
            batch.messages.append(message)
            batch.claimed[message.message_id] = row
        return batch

    def _send(self, batch: _Batch, sent: list[SendResult]) -> None:
        """Hand a built batch to the backend, paced by the rate limit; results go into sent."""
        messages = batch.messages
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

    def _record(
        self, batch: _Batch, sent: Sequence[SendResult], tally: _Tally,
        report: Callable[[], None],
    ) -> None:
        """Commit a sent batch's results in one transaction; rows not handed over are freed."""
        now = self._clock()
        claimed, results, skipped = batch.claimed, list(batch.results), batch.skipped
        uncertain = [claimed[m.message_id].id for m in batch.messages[len(sent):]]
        tally.failed += batch.failed
        bounced: list[outbox.ClaimedDelivery] = []
        for result in sent:
            row = claimed[result.message_id]
            reply = (f"{result.code} " if result.code else "") + result.text
            if result.outcome is Outcome.SENT:
                results.append(outbox.ResultRow(row.id, DeliveryStatus.SENT, result.code, reply))
                tally.sent += 1
            elif (
                result.outcome is Outcome.DEFERRED
                and row.attempts < self.settings.send_max_attempts
            ):
                when = self.timing.open_at(
                    now + timedelta(seconds=retry_delay(self.settings, row.attempts)),
                    row.timezone,
                )
                results.append(
                    outbox.ResultRow(row.id, DeliveryStatus.PENDING, result.code, reply, when)
                )
                tally.retry += 1
            else:
                if result.outcome is Outcome.DEFERRED:
                    reply = f"gave up after {row.attempts} attempts: {reply}"
                results.append(outbox.ResultRow(row.id, DeliveryStatus.FAILED, result.code, reply))
                tally.failed += 1
                if result.outcome is Outcome.BOUNCED and row.subscriber_id is not None:
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
        report()

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
                failed_now=tally.failed,
                skipped_now=tally.skipped,
            )
        )

    def _summary(self, issue: IssueRef, tally: _Tally, stopped: str | None,
                 started: float) -> SendSummary:
        now = self._clock()
        with self.db.write() as session:
            outbox.finish_issue(session, issue.id, now=now)
        with self.db.read() as session:
            status, _, _ = outbox.issue_status(session, issue.id)
            counts = outbox.counts(session, issue.id)
            retry_count, retry_after = outbox.next_retry(session, issue.id)
            details = outcome_details(session, issue.id)
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
            skipped_now=tally.skipped,
            **details,
        )


def _raise_finished(records: list[Future[None]], *, wait: bool = False) -> None:
    """Drop finished record jobs, raising the first one's error; with wait, all of them."""
    while records and (wait or records[0].done()):
        records.pop(0).result()


@dataclass
class _Batch:
    """A claimed batch: its rows, the messages built for them, and rows set aside."""

    rows: list[outbox.ClaimedDelivery]
    messages: list[OutgoingMessage] = field(default_factory=list)
    claimed: dict[str, outbox.ClaimedDelivery] = field(default_factory=dict)
    results: list[outbox.ResultRow] = field(default_factory=list)  # failed while building
    skipped: list[tuple[int, str]] = field(default_factory=list)
    failed: int = 0


@dataclass
class _Tally:
    sent: int = 0
    failed: int = 0
    retry: int = 0
    skipped: int = 0
    bounced: int = 0
