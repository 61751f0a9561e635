"""Queries for issues and the articles frozen into them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, selectinload

from digest.models import Article, Issue, IssueArticle, IssueStatus, Placement

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
            .where(Issue.status.in_(OUT_STATUSES), IssueArticle.choice != Placement.DROPPED)
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
    placements: Sequence[tuple[int, str, bool, str]],
    subject: str = "",
    preheader: str = "",
    intro: str = "",
    status: str = IssueStatus.SENDING,
    lead_id: int | None = None,
    issue_date: date | None = None,
) -> Issue:
    """Insert an issue and its (article id, section, overflow, choice) placements, in order."""
    issue = Issue(
        number=next_issue_number(session),
        label=label,
        window_start=start,
        window_end=end,
        status=status,
        subject=subject,
        preheader=preheader,
        intro=intro,
        lead_article_id=lead_id,
        issue_date=issue_date,
    )
    session.add(issue)
    session.flush()
    session.add_all(
        IssueArticle(
            issue_id=issue.id, article_id=article_id, position=i, section=section,
            overflow=overflow, choice=choice,
        )
        for i, (article_id, section, overflow, choice) in enumerate(placements)
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


def drafts(session: Session) -> list[Issue]:
    """Draft issues, the one whose window ends first first."""
    return list(session.scalars(
        select(Issue).where(Issue.status == IssueStatus.DRAFT)
        .order_by(Issue.window_end, Issue.number)
    ))


def last_out_issue(session: Session) -> Issue | None:
    """The issue with the latest window among those sent or being sent."""
    return session.scalar(
        select(Issue).where(Issue.status.in_(OUT_STATUSES))
        .order_by(Issue.window_end.desc(), Issue.number.desc()).limit(1)
    )


def article_by_ref(session: Session, ref: str) -> Article | None:
    """An article by its id (digits) or its exact URL."""
    ref = ref.strip()
    if ref.isdigit():
        return session.get(Article, int(ref))
    return session.scalar(select(Article).where(Article.url == ref))


def gone_out_in(session: Session, article_id: int, *, other_than: int) -> Issue | None:
    """An issue other than other_than that sent (or is sending) this article, if any."""
    return session.scalar(
        select(Issue)
        .join(IssueArticle, IssueArticle.issue_id == Issue.id)
        .where(IssueArticle.article_id == article_id, Issue.id != other_than,
               Issue.status.in_(OUT_STATUSES), IssueArticle.choice != Placement.DROPPED)
        .order_by(Issue.number.desc()).limit(1)
    )


def replace_placements(
    session: Session, issue_id: int, placements: Sequence[tuple[int, str, bool, str]]
) -> None:
    """Rewrite an issue's (article id, section, overflow, choice) placements, in order."""
    session.execute(delete(IssueArticle).where(IssueArticle.issue_id == issue_id))
    session.add_all(
        IssueArticle(issue_id=issue_id, article_id=article_id, position=i, section=section,
                     overflow=overflow, choice=choice)
        for i, (article_id, section, overflow, choice) in enumerate(placements)
    )
    session.flush()


def update_draft(session: Session, issue_id: int, **values: object) -> bool:
    """Change a draft's own columns; False when the issue is no longer a draft."""
    result = session.execute(
        update(Issue).where(Issue.id == issue_id, Issue.status == IssueStatus.DRAFT)
        .values(**values).execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def promote_draft(session: Session, issue_id: int, issue_date: date) -> bool:
    """Turn a draft into a sending issue dated issue_date; False if it is not a draft."""
    return update_draft(session, issue_id, status=IssueStatus.SENDING, issue_date=issue_date)


def delete_draft(session: Session, issue_id: int) -> bool:
    """Delete a draft and its placements; False if the issue is not a draft."""
    session.execute(
        delete(IssueArticle).where(
            IssueArticle.issue_id == issue_id,
            IssueArticle.issue_id.in_(select(Issue.id).where(Issue.status == IssueStatus.DRAFT)),
        )
    )
    result = session.execute(
        delete(Issue).where(Issue.id == issue_id, Issue.status == IssueStatus.DRAFT)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
