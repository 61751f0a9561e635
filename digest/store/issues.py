"""Queries for issues and the articles frozen into them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from digest.models import Article, Issue, IssueArticle, IssueStatus

#: Issues whose articles count as "already gone out".
OUT_STATUSES = (IssueStatus.SENDING, IssueStatus.PAUSED, IssueStatus.SENT)


def last_sent_end(session: Session) -> datetime | None:
    """End of the newest window that has been sent (or is being sent)."""
    return session.scalar(
        select(func.max(Issue.window_end)).where(Issue.status.in_(OUT_STATUSES))
    )


def next_issue_number(session: Session) -> int:
    """The number the next issue will get."""
    return (session.scalar(select(func.max(Issue.number))) or 0) + 1


def articles_in_window(
    session: Session,
    start: datetime,
    end: datetime,
    *,
    include_sent: bool = False,
    section: str | None = None,
) -> list[Article]:
    """Articles published in [start, end), optionally without those already sent out."""
    query = select(Article).where(Article.published_at >= start, Article.published_at < end)
    if section:
        query = query.where(func.lower(Article.section) == section.lower())
    if not include_sent:
        already = (
            select(IssueArticle.article_id)
            .join(Issue, Issue.id == IssueArticle.issue_id)
            .where(Issue.status.in_(OUT_STATUSES))
        )
        query = query.where(Article.id.not_in(already))
    return list(session.scalars(query.order_by(Article.published_at.desc(), Article.id.desc())))


def issue_for_window(session: Session, start: datetime, end: datetime) -> Issue | None:
    """The issue for exactly this window, if one was created."""
    return session.scalar(
        select(Issue).where(Issue.window_start == start, Issue.window_end == end)
    )


def issue_by_label(session: Session, label: str, *, sent_only: bool = False) -> Issue | None:
    """The newest issue with this label (e.g. ``2025-W47``) or number."""
    query = select(Issue)
    query = query.where(Issue.number == int(label)) if label.isdigit() else query.where(
        Issue.label == label
    )
    if sent_only:
        query = query.where(Issue.status == IssueStatus.SENT)
    return session.scalar(query.order_by(Issue.number.desc()).limit(1))


def list_issues(session: Session, *, status: str | None = None) -> list[Issue]:
    """All issues, newest first."""
    query = select(Issue).order_by(Issue.number.desc())
    if status:
        query = query.where(Issue.status == status)
    return list(session.scalars(query))


def unfinished_issues(session: Session) -> list[Issue]:
    """Issues still sending or paused, oldest first."""
    return list(
        session.scalars(
            select(Issue)
            .where(Issue.status.in_((IssueStatus.SENDING, IssueStatus.PAUSED)))
            .order_by(Issue.number)
        )
    )


def create_issue(
    session: Session,
    *,
    label: str,
    start: datetime,
    end: datetime,
    placements: Sequence[tuple[int, str, bool]],
    subject: str = "",
    preheader: str = "",
    intro: str = "",
) -> Issue:
    """Insert an issue and its (article id, section, overflow) placements, in order."""
    issue = Issue(
        number=next_issue_number(session),
        label=label,
        window_start=start,
        window_end=end,
        subject=subject,
        preheader=preheader,
        intro=intro,
    )
    session.add(issue)
    session.flush()
    session.add_all(
        IssueArticle(
            issue_id=issue.id, article_id=article_id, position=i, section=section,
            overflow=overflow,
        )
        for i, (article_id, section, overflow) in enumerate(placements)
    )
    session.flush()
    return issue


def issue_placements(session: Session, issue_id: int) -> list[IssueArticle]:
    """An issue's articles in order, with the Article rows loaded."""
    return list(
        session.scalars(
            select(IssueArticle)
            .where(IssueArticle.issue_id == issue_id)
            .options(selectinload(IssueArticle.article))
            .order_by(IssueArticle.position)
        )
    )
