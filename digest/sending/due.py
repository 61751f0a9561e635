"""The due check behind ``digest send --if-due``: send, resume, or leave the period alone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from digest.config import Settings
from digest.db import Database
from digest.models import IssueStatus, utcnow
from digest.schedule import Period, Schedule
from digest.sending.control import IssueRef, find_issue, ref_of


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
        issue = ref_of(found) if found is not None else None
    # An editor's draft is not a send in progress: it is what a due send sends.
    draft = issue if issue is not None and issue.status == IssueStatus.DRAFT else None
    if draft is not None:
        issue = None
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
            "skipped. To send it anyway: digest send --if-due --force"
            + (f" (its draft, issue {draft.number}, is kept)" if draft is not None else ""),
        )
    action = "resume" if issue is not None else "send"
    what = f"Draft issue {draft.number}" if draft is not None else "Issue"
    return DueCheck(action, period, issue, f"{what} for {label} was due {due_text}.")
