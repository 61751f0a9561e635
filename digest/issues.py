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
from digest.models import Article, Issue
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

    @property
    def article_count(self) -> int:
        """Number of articles in sections and in the more-stories block."""
        return sum(len(s.articles) for s in self.sections) + len(self.more)

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


def select_issue(
    session: Session,
    settings: Settings,
    window: Window,
    *,
    include_sent: bool = False,
    intro: str = "",
    subject: str = "",
    preheader: str = "",
) -> IssueContent:
    """Select the window's articles into an (unsaved) issue's content.

    If an issue already exists for exactly this window, its frozen selection is returned,
    so a preview shows what was (or will be) sent.
    """
    existing = store.issue_for_window(session, window.start, window.end)
    if existing is not None:
        return content_of(session, existing)
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
    )


def freeze_issue(session: Session, content: IssueContent) -> Issue:
    """Store content as a new issue (status sending) with its articles in order."""
    placements = [
        (article.id, block.name, False) for block in content.sections for article in block.articles
    ] + [(article.id, article.section, True) for article in content.more]
    return store.create_issue(
        session,
        label=content.label,
        start=content.window_start,
        end=content.window_end,
        placements=placements,
        subject=content.subject,
        preheader=content.preheader,
        intro=content.intro,
    )


def content_of(session: Session, issue: Issue) -> IssueContent:
    """Rebuild an issue's content from its frozen placements."""
    blocks: dict[str, list[ArticleView]] = {}
    more: list[ArticleView] = []
    for placement in store.issue_placements(session, issue.id):
        view = article_view(placement.article)
        if placement.overflow:
            more.append(view)
        else:
            blocks.setdefault(placement.section, []).append(view)
    return IssueContent(
        number=issue.number,
        window_start=issue.window_start,
        window_end=issue.window_end,
        label=issue.label,
        sections=tuple(SectionBlock(name, tuple(items)) for name, items in blocks.items()),
        more=tuple(more),
        intro=issue.intro,
        subject=issue.subject,
        preheader=issue.preheader,
    )
