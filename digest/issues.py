"""Weekly windows, article selection and grouping into an issue's sections."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from digest.config import Settings
from digest.errors import InputError
from digest.local_time import issue_day, parse_deliver_at
from digest.models import Article, Issue, IssueStatus, Placement
from digest.store import issues as store


@dataclass(frozen=True, slots=True)
class ArticleView:
    """An article as rendering sees it: plain values, no database session attached."""

    id: int
    title: str
    url: str
    section: str
    published_at: datetime  # timezone-aware, UTC
    author: str = ""
    dek: str = ""  # standfirst; rendering falls back to summary
    summary: str = ""
    image_url: str = ""
    image_alt: str = ""
    image_credit: str = ""
    image_width: int = 0  # pixels, from feed metadata; 0 when unknown
    image_height: int = 0


@dataclass(frozen=True, slots=True)
class SectionBlock:
    """One section of an issue: its label and articles, newest first."""

    name: str
    articles: tuple[ArticleView, ...]


@dataclass(frozen=True, slots=True)
class IssueContent:
    """Everything rendering needs about one issue, independent of any subscriber."""

    number: int
    window_start: datetime  # inclusive, UTC
    window_end: datetime  # exclusive, UTC
    label: str  # "2025-W47" for a week, else "2025-11-17--2025-11-24"
    sections: tuple[SectionBlock, ...]
    more: tuple[ArticleView, ...] = ()  # beyond the section caps: the "more stories" block
    intro: str = ""  # editor's note, Markdown or plain text
    subject: str = ""  # per-issue override; empty means the subject template
    preheader: str = ""  # per-issue override; empty means built from top stories
    #: The lead story's id. Its section comes first and it opens that section, so the
    #: first story in reading order is always the lead. None: the selection's first story.
    lead_id: int | None = None
    #: Articles an editor added: the size gate never leaves them out.
    pinned: frozenset[int] = frozenset()
    #: The date readers see (the day it is sent or scheduled); None: the window's last day.
    issue_date: date | None = None

    @property
    def article_count(self) -> int:
        """Number of articles in sections and in the more-stories block."""
        return sum(len(s.articles) for s in self.sections) + len(self.more)

    def stories(self) -> list[ArticleView]:
        """Every article in reading order: sections in order, then "more stories"."""
        return [a for s in self.sections for a in s.articles] + list(self.more)

    @property
    def lead(self) -> ArticleView | None:
        """The lead story: the first in reading order (see lead_id)."""
        for block in self.sections:
            if block.articles:
                return block.articles[0]
        return self.more[0] if self.more else None

    @property
    def is_empty(self) -> bool:
        """True when there is nothing to send."""
        return self.article_count == 0


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open time range [start, end) in UTC, with a human label."""

    start: datetime
    end: datetime
    label: str


_WEEK = re.compile(r"^(\d{4})-?W(\d{1,2})$", re.IGNORECASE)


def parse_week(label: str, tz: ZoneInfo) -> Window:
    """``2025-W47`` as the ISO week's Monday 00:00 to next Monday 00:00 in tz, in UTC."""
    match = _WEEK.match(label.strip())
    if not match:
        raise InputError(f"week {label!r} is not an ISO week; write it like 2025-W47")
    year, week = int(match[1]), int(match[2])
    try:
        monday = date.fromisocalendar(year, week, 1)
    except ValueError:
        raise InputError(f"week {label!r} does not exist: {year} has no week {week}") from None
    start = datetime.combine(monday, time(0), tzinfo=tz)
    end = datetime.combine(monday + timedelta(days=7), time(0), tzinfo=tz)
    return Window(start.astimezone(UTC), end.astimezone(UTC), f"{year}-W{week:02d}")


def week_of(moment: datetime, tz: ZoneInfo) -> Window:
    """The ISO week (in tz) that contains moment."""
    year, week, _ = moment.astimezone(tz).isocalendar()
    return parse_week(f"{year}-W{week:02d}", tz)


def parse_moment(text: str, tz: ZoneInfo) -> datetime:
    """A date (local midnight in tz) or an ISO 8601 date-time (naive means tz), as UTC."""
    raw = text.strip()
    try:
        if len(raw) == 10:
            return datetime.combine(date.fromisoformat(raw), time(0), tzinfo=tz).astimezone(UTC)
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise InputError(
            f"{text!r} is not a date; write 2025-11-17 or 2025-11-17T09:00+01:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.astimezone(UTC)


def explicit_window(since: datetime, until: datetime, tz: ZoneInfo) -> Window:
    """A window from --since/--until, labelled by its local dates."""
    if until <= since:
        raise InputError("--until must be later than --since")
    label = f"{since.astimezone(tz):%Y-%m-%d}--{until.astimezone(tz):%Y-%m-%d}"
    return Window(since, until, label)


def resolve_window(
    tz: ZoneInfo,
    *,
    week: str | None = None,
    since: str | None = None,
    until: str | None = None,
    last_sent_end: datetime | None = None,
    now: datetime | None = None,
) -> Window:
    """The window an issue covers, from the CLI's --week / --since / --until.

    With none of them, it runs from the end of the last sent issue (or 7 days back, for the
    first issue) to now.
    """
    if week and (since or until):
        raise InputError("give either --week or --since/--until, not both")
    if week:
        return parse_week(week, tz)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    start = parse_moment(since, tz) if since else (last_sent_end or now - timedelta(days=7))
    end = parse_moment(until, tz) if until else now
    return explicit_window(start, end, tz)


def section_rank(order: Sequence[str]) -> Callable[[str], tuple[int, str]]:
    """Sort key: configured sections in their order, then unknown ones alphabetically."""
    positions = {name.casefold(): i for i, name in enumerate(order)}

    def key(section: str) -> tuple[int, str]:
        return (positions.get(section.casefold(), len(positions)), section.casefold())

    return key


def group_articles(
    articles: Iterable[ArticleView],
    *,
    section_order: Sequence[str],
    section_cap: int,
    total_cap: int,
) -> tuple[tuple[SectionBlock, ...], tuple[ArticleView, ...]]:
    """Group articles into sections and a "more stories" overflow, under both caps.

    Within a section the newest come first. The total cap is shared fairly: every section's
    newest article is taken before any section's second, and so on. Articles past a section's
    cap (but within the total) go to "more stories"; articles past the total are left out.
    """
    by_section: dict[str, list[ArticleView]] = {}
    for article in articles:
        by_section.setdefault(article.section or "Other", []).append(article)
    rank = section_rank(section_order)
    ordered = sorted(by_section, key=rank)
    for name in ordered:
        by_section[name].sort(key=lambda a: (a.published_at, a.id), reverse=True)

    candidates = [
        (depth, si, article)
        for si, name in enumerate(ordered)
        for depth, article in enumerate(by_section[name])
    ]
    candidates.sort(key=lambda c: (c[0], c[1]))
    chosen = candidates[:total_cap]

    main: dict[str, list[ArticleView]] = {}
    more: list[tuple[int, int, ArticleView]] = []
    for depth, si, article in chosen:
        if depth < section_cap:
            main.setdefault(ordered[si], []).append(article)
        else:
            more.append((si, depth, article))
    blocks = tuple(
        SectionBlock(name, tuple(main[name])) for name in ordered if name in main
    )
    more.sort(key=lambda m: (m[0], m[1]))
    return blocks, tuple(a for _, _, a in more)


def article_view(article: Article) -> ArticleView:
    """Detach an Article row into the plain value rendering uses."""
    return ArticleView(
        id=article.id,
        title=article.title,
        url=article.url,
        section=article.section,
        published_at=article.published_at,
        author=article.author,
        dek=article.dek,
        summary=article.summary,
        image_url=article.image_url,
        image_alt=article.image_alt,
        image_credit=article.image_credit,
        image_width=article.image_width,
        image_height=article.image_height,
    )


def window_for(
    session: Session,
    settings: Settings,
    *,
    week: str | None = None,
    since: str | None = None,
    until: str | None = None,
    now: datetime | None = None,
) -> Window:
    """Resolve the CLI's window options, using the last sent issue for the default start."""
    last = None if (week or since) else store.last_sent_end(session)
    return resolve_window(settings.tz, week=week, since=since, until=until,
                          last_sent_end=last, now=now)


_WEEK_LABEL = re.compile(r"^\d{4}-W\d{2}$")


def existing_issue(session: Session, window: Window) -> Issue | None:
    """The issue for this window, or for the same ISO week label (never two for one week)."""
    issue = store.issue_for_window(session, window.start, window.end)
    if issue is None and _WEEK_LABEL.match(window.label):
        issue = store.issue_by_label(session, window.label)
    return issue


@dataclass(frozen=True, slots=True)
class Upcoming:
    """The issue meant when no window is given, with a note for the editor."""

    window: Window
    note: str = ""


def upcoming(session: Session, settings: Settings, *, now: datetime | None = None,
             last_when_empty: bool = False) -> Upcoming:
    """The issue ``digest send``, ``preview`` and ``check`` mean without --week/--since/--until.

    In order: an unfinished (sending or paused) issue; else the earliest draft; else the
    articles since the last sent issue up to now. When the last sent issue's window reaches
    past now (it was sent for the current week), there is nothing newer yet: that issue
    is meant, as sent, and the note says so. With last_when_empty (for a preview) the same
    goes when no article has come in since it.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    unfinished = store.unfinished_issues(session)
    if unfinished:
        issue = unfinished[0]
        return Upcoming(_window_of(issue), f"Issue {issue.number} ({issue.label}) is "
                        f"{issue.status}: it is the one a send continues.")
    drafts = store.drafts(session)
    if drafts:
        issue = drafts[0]
        return Upcoming(_window_of(issue), f"Draft issue {issue.number} ({issue.label}); change "
                        f"it with: digest issue edit {issue.label}")
    last = store.last_out_issue(session)
    if last is not None and last.window_end >= now:
        until = last.window_end.astimezone(settings.tz)
        return Upcoming(_window_of(last), (
            f"Issue {last.number} ({last.label}) was the last one sent and covers articles up "
            f"to {until:%a %Y-%m-%d %H:%M %Z}, so nothing newer is due yet; showing it as "
            "sent. For the next issue: digest draft, or --week."
        ))
    window = window_for(session, settings, now=now)
    if last is not None and last_when_empty and not store.articles_in_window(
        session, window.start, window.end
    ):
        return Upcoming(_window_of(last), (
            f"No articles have come in since issue {last.number} ({last.label}) was sent; "
            "showing it as sent. Import some with `digest import FEED`, or pick a week with "
            "--week."
        ))
    return Upcoming(window)


def _window_of(issue: Issue) -> Window:
    return Window(issue.window_start, issue.window_end, issue.label)


def select_issue(
    session: Session,
    settings: Settings,
    window: Window,
    *,
    include_sent: bool = False,
    intro: str = "",
    subject: str = "",
    preheader: str = "",
    now: datetime | None = None,
) -> IssueContent:
    """Select the window's articles into an (unsaved) issue's content.

    If an issue already exists for this window or week (a draft, or one sent or sending),
    its frozen selection is returned, so a preview shows what was (or will be) sent.
    """
    existing = existing_issue(session, window)
    if existing is not None:
        if existing.status == IssueStatus.DRAFT and (intro or subject or preheader):
            raise draft_words_error(existing)
        return content_of(session, existing, settings, now=now)
    articles = store.articles_in_window(
        session, window.start, window.end, include_sent=include_sent
    )
    sections, more = group_articles(
        (article_view(a) for a in articles),
        section_order=settings.sections,
        section_cap=settings.section_cap,
        total_cap=settings.total_cap,
    )
    return IssueContent(
        number=store.next_issue_number(session),
        window_start=window.start,
        window_end=window.end,
        label=window.label,
        sections=sections,
        more=more,
        intro=intro,
        subject=subject,
        preheader=preheader,
        issue_date=dated(settings, window, now),
    )


def draft_words_error(draft: Issue) -> InputError:
    """The error for --subject/--preheader/--intro given where a draft already decides them."""
    return InputError(
        f"issue {draft.number} ({draft.label}) is a draft: change its subject, preheader or "
        f"intro with digest issue edit {draft.label}"
    )


def dated(settings: Settings, window: Window, now: datetime | None = None, *,
          sending: bool = False) -> date:
    """The date an issue for window carries: the day it is scheduled or sent, in timezone.

    A window that ends at a scheduled moment (what ``send --if-due`` sends) is dated that
    day, also when cron catches up the next morning; sent early by hand (sending, before
    that day), it is dated the day it goes. Any other window is dated the day it is sent,
    which for a preview is today.
    """
    from digest.errors import ConfigError
    from digest.schedule import Schedule

    tz = settings.tz
    today = (now or datetime.now(UTC)).astimezone(tz).date()
    try:
        scheduled = Schedule.from_settings(settings).window(window.end)
    except ConfigError:
        scheduled = None  # a broken schedule is reported by `digest schedule`, not here
    if scheduled is not None and (scheduled.start, scheduled.end) == (window.start, window.end):
        if parse_deliver_at(settings.deliver_at) is not None:
            # Local delivery: the window ends at deliver_at on the issue's day where days
            # begin first (UTC+14), which in most zones is still the day before. Readers get
            # it on the issue's day at their own hour (also when it is started early by
            # hand: the waves still wait for that day), so that is the date it carries.
            return issue_day(window.end)
        day = window.end.astimezone(tz).date()
        return min(day, today) if sending else day
    return today


def freeze_issue(
    session: Session, content: IssueContent, *, status: IssueStatus = IssueStatus.SENDING,
) -> Issue:
    """Store content as a new issue (status sending, or draft) with its articles in order.

    A draft keeps no date: it is worked out when shown, and fixed when its send starts.
    """
    def choice(article_id: int) -> Placement:
        return Placement.PINNED if article_id in content.pinned else Placement.AUTO

    placements = [
        (a.id, block.name, False, choice(a.id))
        for block in content.sections for a in block.articles
    ] + [(a.id, a.section, True, choice(a.id)) for a in content.more]
    return store.create_issue(
        session,
        label=content.label,
        start=content.window_start,
        end=content.window_end,
        placements=placements,
        subject=content.subject,
        preheader=content.preheader,
        intro=content.intro,
        status=status,
        lead_id=content.lead_id,
        issue_date=None if status == IssueStatus.DRAFT else content.issue_date,
    )


def content_of(
    session: Session, issue: Issue, settings: Settings | None = None, *,
    now: datetime | None = None,
) -> IssueContent:
    """Rebuild an issue's content from its frozen placements (dropped ones left out).

    The lead's section comes first and the lead opens it. With settings, an issue that has
    no stored date yet (a draft) is dated as it would be if sent now.
    """
    blocks: dict[str, list[ArticleView]] = {}
    more: list[ArticleView] = []
    pinned: set[int] = set()
    lead_id = issue.lead_article_id
    for placement in store.issue_placements(session, issue.id):
        if placement.choice == Placement.DROPPED:
            continue
        view = article_view(placement.article)
        if placement.choice == Placement.PINNED:
            pinned.add(view.id)
        if placement.overflow and view.id != lead_id:
            more.append(view)
        else:
            blocks.setdefault(placement.section, []).append(view)
    ordered = list(blocks.items())
    lead_block = next((i for i, (_, items) in enumerate(ordered)
                       if any(a.id == lead_id for a in items)), None)
    if lead_block is None:
        lead_id = None
    else:
        name, items = ordered.pop(lead_block)
        items.sort(key=lambda a: a.id != lead_id)  # stable: the rest keep their order
        ordered.insert(0, (name, items))
    issue_day = issue.issue_date
    if issue_day is None and settings is not None:
        issue_day = dated(settings, _window_of(issue), now)
    return IssueContent(
        number=issue.number,
        window_start=issue.window_start,
        window_end=issue.window_end,
        label=issue.label,
        sections=tuple(SectionBlock(name, tuple(items)) for name, items in ordered),
        more=tuple(more),
        intro=issue.intro,
        subject=issue.subject,
        preheader=issue.preheader,
        lead_id=lead_id,
        pinned=frozenset(pinned),
        issue_date=issue_day,
    )
