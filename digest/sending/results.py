"""What a send reports: progress events and the summary of a run."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict

from sqlalchemy.orm import Session

from digest.models import DeliveryStatus, IssueStatus
from digest.store import outbox, retries

#: Exit status of ``digest send``: everything sent, or nothing to do.
EXIT_OK = 0
#: Exit status when a worker of a --workers send failed.
EXIT_ERROR = 1
#: Exit status when the send finished but some deliveries failed.
EXIT_SOME_FAILED = 3
#: Exit status when nothing failed but some deliveries still wait for a retry.
EXIT_SOME_PENDING = 4

#: How many distinct reasons a summary lists.
TOP_REASONS = 3

_ADDRESS = re.compile(r"<?[^\s<>@]+@[^\s<>@]+>?")
_GAVE_UP = re.compile(r"^gave up after \d+ attempts: ")


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
    failed_now: int = 0  # by this run
    skipped_now: int = 0  # by this run

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
    skipped_now: int = 0
    errors: tuple[str, ...] = ()  # workers of a --workers send that failed or died
    failed_reasons: tuple[Reason, ...] = ()
    pending_reasons: tuple[Reason, ...] = ()
    retryable: int = 0  # failed rows that digest send --retry-failed would requeue
    waiting: int = 0  # pending rows never tried: due later (deliver_at waves, send_window)

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
        if self.waiting == self.retry_count:
            return (
                f"{self.waiting} deliveries wait for their readers' hour (deliver_at, "
                f"send_window); the next is due {when}; cron's digest send --if-due sends them"
            )
        return (
            f"{self.retry_count} deliveries will be retried after {when}; "
            "run digest send again (cron --if-due does)"
        )

    @property
    def reason_lines(self) -> list[str]:
        """The top failure and retry reasons with their counts, and what to do about them."""
        out: list[str] = []
        for title, reasons in (("Failed", self.failed_reasons),
                               ("Waiting for a retry", self.pending_reasons)):
            if reasons:
                out.append(f"{title}, top reasons:")
                out.extend(f"  {r.count:>6} × {r.text}" for r in reasons)
        if self.retryable:
            out.append(
                f"{self.retryable} failed deliveries had a temporary or unknown cause; once it "
                f"is fixed, run: digest send --retry-failed {self.label}"
            )
        return out

    @property
    def exit_code(self) -> int:
        """0 all sent, 1 a worker failed, 3 some deliveries failed, 4 none failed but some
        still wait (retry). Rows not yet due (deliver_at waves) are not a reason for 4: cron
        would report every run of a 26-hour send. Nor are rows in flight: when this run ends
        its own batches are recorded, so those belong to another sender still at work."""
        if self.errors:
            return EXIT_ERROR
        if self.counts.failed:
            return EXIT_SOME_FAILED
        if self.counts.pending > self.waiting and self.status == IssueStatus.SENDING:
            return EXIT_SOME_PENDING
        return EXIT_OK


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason deliveries did not go out, with how many rows it applies to."""

    text: str
    count: int


def _reason_text(code: int | None, reply: str) -> str:
    """A reply with addresses masked, so that one cause is counted once."""
    text = _GAVE_UP.sub("", reply.strip()) or "no reply"
    text = _ADDRESS.sub("<address>", text)
    if code is not None and not text.startswith(str(code)):
        text = f"{code} {text}"
    return text if len(text) <= 160 else text[:157] + "..."


def top_reasons(rows: list[tuple[int | None, str, int]],
                limit: int = TOP_REASONS) -> tuple[Reason, ...]:
    """The most frequent reasons among (code, reply, count) rows."""
    tally: Counter[str] = Counter()
    for code, reply, count in rows:
        tally[_reason_text(code, reply)] += count
    return tuple(Reason(text, count) for text, count in tally.most_common(limit))


class OutcomeDetails(TypedDict):
    """The SendSummary fields about unsuccessful rows."""

    failed_reasons: tuple[Reason, ...]
    pending_reasons: tuple[Reason, ...]
    retryable: int
    waiting: int


def outcome_details(session: Session, issue_id: int) -> OutcomeDetails:
    """The reasons and retryable count of an issue's unsuccessful rows, as SendSummary fields."""
    return {
        "failed_reasons": top_reasons(
            retries.reply_counts(session, issue_id, DeliveryStatus.FAILED)),
        "pending_reasons": top_reasons(
            retries.reply_counts(session, issue_id, DeliveryStatus.PENDING)),
        "retryable": retries.retryable_counts(session, [issue_id]).get(issue_id, 0),
        "waiting": outbox.waiting_count(session, issue_id),
    }
