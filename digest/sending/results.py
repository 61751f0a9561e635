"""What a send reports: progress events and the summary of a run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from digest.models import IssueStatus
from digest.store import outbox


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
        """0 when nothing failed, 1 when a worker failed, 3 when deliveries failed for good."""
        if self.errors:
            return 1
        return 3 if self.counts.failed else 0
