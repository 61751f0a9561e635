"""Drafts: freeze a week's automatic selection into an issue an editor can change before it goes.

A draft is an issue with status ``draft`` and no delivery rows. Its articles are stored as
placements like a sent issue's, each recorded as ``auto`` (the selection put it there),
``pinned`` (an editor added it: it makes the issue whatever the caps) or ``dropped`` (an
editor left it out: never in this issue, still free for a later one). ``digest send``
and a due ``send --if-due`` send a draft as it stands (sending.control.create_issue).

Everything here is plain domain code, so a web page can offer the same edits later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from digest.config import Settings
from digest.db import Database
from digest.errors import InputError, NotFoundError
from digest.headlines import PREHEADER_MAX, check_subject, one_line, subject_warning
from digest.issues import (
    ArticleView,
    IssueContent,
    Window,
    article_view,
    content_of,
    existing_issue,
    freeze_issue,
    section_rank,
    select_issue,
    window_for,
)
from digest.models import Article, Issue, IssueStatus, Placement, utcnow
from digest.render import Renderer
from digest.schedule import Schedule
from digest.store import issues as store


@dataclass(frozen=True, slots=True)
class Edits:
    """One ``digest issue edit``: every change is applied in one transaction, in this order."""

    add: tuple[str, ...] = ()  # article ids or URLs, pinned into their sections
    drop: tuple[str, ...] = ()
    lead: str | None = None
    move: tuple[str, int] | None = None  # (article, 1-based place in its section)
    section_order: tuple[str, ...] | None = None
    subject: str | None = None  # "" restores the default subject
    preheader: str | None = None  # "" restores the default preheader
    intro: str | None = None
    include_sent: bool = False  # allow adding an article that went out in another issue

    @property
    def is_empty(self) -> bool:
        """True when nothing would change."""
        return not (self.add or self.drop or self.lead or self.move or self.section_order
                    is not None or self.subject is not None or self.preheader is not None
                    or self.intro is not None)


@dataclass(frozen=True, slots=True)
class IssueView:
    """An issue as an editor sees it: its order, pins, drops and words."""

    number: int
    label: str
    status: str
    content: IssueContent
    subject: str  # as readers will see it (the default when none was set)
    preheader: str
    dropped: tuple[ArticleView, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def is_draft(self) -> bool:
        """True while the issue can still be edited."""
        return self.status == IssueStatus.DRAFT


# ------------------------------------------------------------------------------ the layout


@dataclass
class _Layout:
    """A draft's placements as lists an edit can rearrange, then write back in order."""

    sections: list[tuple[str, list[int]]]
    more: list[int]
    dropped: list[int]
    choice: dict[int, str]
    articles: dict[int, Article]
    lead: int | None
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, session: Session, issue: Issue) -> _Layout:
        sections: dict[str, list[int]] = {}
        more: list[int] = []
        dropped: list[int] = []
        choice: dict[int, str] = {}
        articles: dict[int, Article] = {}
        for p in store.issue_placements(session, issue.id):
            articles[p.article_id] = p.article
            choice[p.article_id] = p.choice
            if p.choice == Placement.DROPPED:
                dropped.append(p.article_id)
            elif p.overflow:
                more.append(p.article_id)
            else:
                sections.setdefault(p.section, []).append(p.article_id)
        return cls(list(sections.items()), more, dropped, choice, articles,
                   issue.lead_article_id)

    def placements(self) -> list[tuple[int, str, bool, str]]:
        out = [(i, name, False, self.choice[i]) for name, ids in self.sections for i in ids]
        out += [(i, self._section_of(i), True, self.choice[i]) for i in self.more]
        out += [(i, self._section_of(i), False, Placement.DROPPED) for i in self.dropped]
        return out

    def _section_of(self, article_id: int) -> str:
        return self.articles[article_id].section or "Other"

    def where(self, article_id: int) -> list[int] | None:
        """The list (a section's, or "more stories") holding the article, if it is shown."""
        for _, ids in self.sections:
            if article_id in ids:
                return ids
        return self.more if article_id in self.more else None

    def remove(self, article_id: int) -> None:
        holder = self.where(article_id)
        if holder is not None:
            holder.remove(article_id)
        self.sections = [(n, ids) for n, ids in self.sections if ids]

    def pin(self, article: Article, order: Sequence[str]) -> None:
        """Put article at the end of its own section (never "more stories"), pinned."""
        self.articles[article.id] = article
        if article.id in self.dropped:
            self.dropped.remove(article.id)
        self.choice[article.id] = Placement.PINNED
        holder = self.where(article.id)
        if holder is not None and holder is not self.more:
            return  # already in its section: now pinned there
        self.remove(article.id)
        name = self._section_of(article.id)
        for section, ids in self.sections:
            if section.casefold() == name.casefold():
                ids.append(article.id)
                return
        # A section the issue did not have: where the configured order puts it.
        rank = section_rank(order)
        place = next((i for i, (section, _) in enumerate(self.sections)
                      if rank(section) > rank(name)), len(self.sections))
        self.sections.insert(place, (name, [article.id]))


# ------------------------------------------------------------------------------ operations


def draft_window(session: Session, settings: Settings, *, week: str | None = None,
                 since: str | None = None, until: str | None = None,
                 now: datetime | None = None) -> Window:
    """The window a new draft covers: the options' window, else the next scheduled issue's.

    A scheduled week that already has a sent issue (say, sent by hand with --week) is
    passed over for the one after it.
    """
    if week or since or until:
        return window_for(session, settings, week=week, since=since, until=until, now=now)
    schedule = Schedule.from_settings(settings)
    windows = [schedule.window(moment) for moment in schedule.next_runs(now or utcnow(), 2)]
    for window in windows:
        found = existing_issue(session, window)
        if found is None or found.status == IssueStatus.DRAFT:
            return window
    return windows[-1]


def create_draft(db: Database, settings: Settings, window: Window, *,
                 include_sent: bool = False, now: datetime | None = None) -> IssueView:
    """Freeze the window's automatic selection into a new draft issue (no deliveries)."""
    try:
        with db.write() as session:
            found = existing_issue(session, window)
            if found is not None:
                raise InputError(_exists(found))
            content = select_issue(session, settings, window, include_sent=include_sent,
                                   now=now)
            if content.is_empty:
                raise InputError(
                    f"no articles for {window.label}: nothing to draft. Import some with "
                    "`digest import FEED`, or pick another week with --week"
                )
            issue = freeze_issue(session, content, status=IssueStatus.DRAFT)
            snapshot = _Snapshot.of(session, settings, issue, now=now)
    except IntegrityError:
        raise InputError(
            f"another draft or issue for {window.label} was created at the same time; "
            f"see it with: digest issue show {window.label}"
        ) from None
    return snapshot.view(settings)


def _exists(issue: Issue) -> str:
    if issue.status == IssueStatus.DRAFT:
        return (f"issue {issue.number} ({issue.label}) is already a draft: change it with "
                f"digest issue edit {issue.label}, or start again after digest issue discard "
                f"{issue.label}")
    return (f"issue {issue.number} ({issue.label}) is {issue.status}: it can no longer be "
            "drafted or edited")


def show_issue(db: Database, settings: Settings, ref: str, *,
               now: datetime | None = None) -> IssueView:
    """Any issue (label like 2025-W47, or number) with its order, pins and drops."""
    with db.read() as session:
        snapshot = _Snapshot.of(session, settings, _issue(session, ref), now=now)
    return snapshot.view(settings)


def discard_draft(db: Database, ref: str) -> tuple[int, str]:
    """Delete a draft; its articles are free again. Returns its (number, label)."""
    with db.write() as session:
        issue = _issue(session, ref)
        if issue.status != IssueStatus.DRAFT or not store.delete_draft(session, issue.id):
            raise InputError(_exists(issue))
        return issue.number, issue.label


def edit_draft(db: Database, settings: Settings, ref: str, edits: Edits, *,
               now: datetime | None = None) -> IssueView:
    """Apply edits to a draft in one transaction; on any error nothing changes."""
    if edits.is_empty:
        raise InputError("nothing to change: give --lead, --drop, --add, --move/--to, "
                         "--section-order, --subject, --preheader or --intro")
    with db.write() as session:
        issue = _issue(session, ref)
        if issue.status != IssueStatus.DRAFT:
            raise InputError(_exists(issue))
        layout = _Layout.load(session, issue)
        for item in edits.add:
            _add(session, layout, issue, item, settings, edits.include_sent)
        for item in edits.drop:
            _drop(session, layout, issue, item)
        if edits.lead is not None:
            article = _article(session, edits.lead)
            holder = layout.where(article.id)
            if holder is None or holder is layout.more:
                _add(session, layout, issue, edits.lead, settings, edits.include_sent)
            layout.choice[article.id] = Placement.PINNED  # the lead always makes the issue
            layout.lead = article.id
            # It opens its section, and stays there if another lead is chosen later.
            holder = layout.where(article.id)
            if holder is not None:
                holder.remove(article.id)
                holder.insert(0, article.id)
        if edits.move is not None:
            _move(session, layout, *edits.move)
        if edits.section_order is not None:
            _order_sections(layout, edits.section_order)
        values: dict[str, object] = {"lead_article_id": layout.lead}
        if edits.subject is not None:
            values["subject"] = check_subject(edits.subject) if edits.subject.strip() else ""
        if edits.preheader is not None:
            values["preheader"] = one_line(edits.preheader)
        if edits.intro is not None:
            values["intro"] = edits.intro
        if not any(ids for _, ids in layout.sections) and not layout.more:
            raise InputError("that would leave the issue with no articles; add one first "
                             "(--add URL) or discard the draft (digest issue discard)")
        if not store.update_draft(session, issue.id, **values):
            raise InputError(_exists(issue))  # its send started while we were editing
        store.replace_placements(session, issue.id, layout.placements())
        session.refresh(issue)
        snapshot = _Snapshot.of(session, settings, issue, now=now)
    # Compiled after the commit, so the write lock is not held through an MJML compile.
    return snapshot.view(settings, layout.warnings)


def _issue(session: Session, ref: str) -> Issue:
    issue = store.issue_by_label(session, ref.strip())
    if issue is None:
        raise NotFoundError(
            f"no issue {ref!r}; create a draft with `digest draft --week {ref}` or list "
            "issues with `digest issues`"
        )
    return issue


def _article(session: Session, ref: str) -> Article:
    article = store.article_by_ref(session, ref)
    if article is None:
        raise NotFoundError(
            f"no stored article {ref!r}: give its id (digest issue show) or its exact URL "
            "(digest articles lists them)"
        )
    return article


def _label(article: Article) -> str:
    return f"article {article.id} ({one_line(article.title)[:60]})"


def _add(session: Session, layout: _Layout, issue: Issue, ref: str, settings: Settings,
         include_sent: bool) -> None:
    article = _article(session, ref)
    if not include_sent:
        other = store.gone_out_in(session, article.id, other_than=issue.id)
        if other is not None:
            raise InputError(
                f"{_label(article)} already went out in issue {other.number} ({other.label}); "
                "an article is sent once. Add --include-sent to send it again"
            )
    if not issue.window_start <= article.published_at < issue.window_end:
        layout.warnings.append(f"{_label(article)} was published outside this issue's window")
    layout.pin(article, settings.sections)


def _drop(session: Session, layout: _Layout, issue: Issue, ref: str) -> None:
    article = _article(session, ref)
    if article.id in layout.dropped:
        return
    if layout.where(article.id) is None:
        raise InputError(f"{_label(article)} is not in issue {issue.number} ({issue.label}); "
                         "nothing to drop (digest issue show lists what is)")
    layout.remove(article.id)
    layout.dropped.append(article.id)
    layout.choice[article.id] = Placement.DROPPED
    if layout.lead == article.id:
        layout.lead = None
        layout.warnings.append(f"{_label(article)} was the lead; the first story leads now")


def _move(session: Session, layout: _Layout, ref: str, place: int) -> None:
    article = _article(session, ref)
    holder = layout.where(article.id)
    if holder is None:
        raise InputError(f"{_label(article)} is not in this issue; add it first (--add)")
    if place < 1:
        raise InputError("--to counts from 1 (the top of the article's section)")
    if layout.lead == article.id and place != 1:
        raise InputError(f"{_label(article)} is the lead, which always opens the issue; "
                         "choose another lead (--lead) first")
    holder.remove(article.id)
    holder.insert(min(place, len(holder) + 1) - 1, article.id)


def _order_sections(layout: _Layout, names: Sequence[str]) -> None:
    present = {name.casefold(): (name, ids) for name, ids in layout.sections}
    wanted = [n.strip() for n in names if n.strip()]
    unknown = [n for n in wanted if n.casefold() not in present]
    if unknown:
        raise InputError(
            f"section(s) {', '.join(map(repr, unknown))} are not in this issue; it has: "
            + ", ".join(name for name, _ in layout.sections)
        )
    first = [present[n.casefold()] for n in dict.fromkeys(w.casefold() for w in wanted)]
    rest = [(n, ids) for n, ids in layout.sections if n.casefold() not in
            {w.casefold() for w in wanted}]
    layout.sections = first + rest
    if layout.lead is not None and layout.sections and layout.lead not in layout.sections[0][1]:
        layout.warnings.append("the lead's section still opens the issue (the lead comes first)")


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What an IssueView needs from the database, read inside the transaction."""

    number: int
    label: str
    status: str
    content: IssueContent
    dropped: tuple[ArticleView, ...]

    @classmethod
    def of(cls, session: Session, settings: Settings, issue: Issue, *,
           now: datetime | None = None) -> _Snapshot:
        content = content_of(session, issue, settings, now=now)
        dropped = tuple(article_view(p.article)
                        for p in store.issue_placements(session, issue.id)
                        if p.choice == Placement.DROPPED)
        return cls(issue.number, issue.label, issue.status, content, dropped)

    def view(self, settings: Settings, warnings: Sequence[str] = ()) -> IssueView:
        """The view, with the subject and preheader readers will see."""
        content = self.content
        compiled = Renderer(settings).compile(content) if not content.is_empty else None
        subject = compiled.subject if compiled else content.subject
        preheader = compiled.preheader if compiled else content.preheader
        found = list(warnings)
        if note := subject_warning(subject):
            found.append(note)
        if len(preheader) > PREHEADER_MAX:
            found.append(f"the preheader is {len(preheader)} characters; inboxes show about "
                         f"{PREHEADER_MAX}")
        return IssueView(self.number, self.label, self.status, content, subject, preheader,
                         self.dropped, tuple(found))
