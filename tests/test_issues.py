"""Weekly windows, selection caps and section order, and never re-sending an article."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from digest.config import Settings
from digest.db import Database
from digest.errors import InputError
from digest.issues import (
    ArticleView,
    freeze_issue,
    group_articles,
    parse_moment,
    parse_week,
    resolve_window,
    select_issue,
    week_of,
)
from digest.models import Article, IssueStatus

NEW_YORK = ZoneInfo("America/New_York")
TOKYO = ZoneInfo("Asia/Tokyo")


def view(id: int, section: str, hours_ago: int) -> ArticleView:
    base = datetime(2025, 11, 21, 12, tzinfo=UTC)
    return ArticleView(
        id=id, title=f"Story {id}", url=f"https://news.example.org/{id}", section=section,
        published_at=base - timedelta(hours=hours_ago),
    )


def test_week_runs_monday_to_monday_in_local_time() -> None:
    """2025-W47 in New York starts Monday 17 Nov 00:00 local, which is 05:00 UTC."""
    window = parse_week("2025-W47", NEW_YORK)
    assert window.start == datetime(2025, 11, 17, 5, tzinfo=UTC)
    assert window.end == datetime(2025, 11, 24, 5, tzinfo=UTC)
    assert window.label == "2025-W47"


def test_sunday_2330_local_belongs_to_that_week() -> None:
    """An article at 23:30 Sunday local time is in the week that Sunday ends, not the next."""
    sunday_late = datetime(2025, 11, 23, 23, 30, tzinfo=TOKYO)
    window = parse_week("2025-W47", TOKYO)
    assert window.start <= sunday_late.astimezone(UTC) < window.end
    assert week_of(sunday_late, TOKYO).label == "2025-W47"
    # The same instant is already Sunday afternoon in New York and Monday in Tokyo's next week
    monday_early = datetime(2025, 11, 24, 0, 30, tzinfo=TOKYO)
    assert week_of(monday_early, TOKYO).label == "2025-W48"


def test_week_across_dst_change_is_seven_local_days() -> None:
    """The week of the US fall-back change is 169 hours long in UTC."""
    window = parse_week("2025-W44", NEW_YORK)  # 27 Oct - 3 Nov, DST ends 2 Nov
    assert window.end - window.start == timedelta(hours=169)


@pytest.mark.parametrize("bad", ["2025-47", "W47", "2025-W54", "2025-W00", "next week"])
def test_bad_week_says_how_to_write_it(bad: str) -> None:
    with pytest.raises(InputError, match=r"2025-W47|does not exist"):
        parse_week(bad, NEW_YORK)


def test_default_window_starts_at_last_sent_issue() -> None:
    now = datetime(2025, 11, 26, 12, tzinfo=UTC)
    last = datetime(2025, 11, 21, 9, tzinfo=UTC)
    assert resolve_window(UTC, last_sent_end=last, now=now).start == last
    assert resolve_window(UTC, now=now).start == now - timedelta(days=7)
    assert resolve_window(UTC, now=now).end == now


def test_since_until_dates_are_local_midnight() -> None:
    window = resolve_window(NEW_YORK, since="2025-11-01", until="2025-11-08")
    assert window.start == datetime(2025, 11, 1, 4, tzinfo=UTC)
    assert window.end == datetime(2025, 11, 8, 5, tzinfo=UTC)
    with pytest.raises(InputError, match="later than"):
        resolve_window(UTC, since="2025-11-08", until="2025-11-01")
    with pytest.raises(InputError, match="not a date"):
        parse_moment("yesterday", UTC)
    with pytest.raises(InputError, match="either --week"):
        resolve_window(UTC, week="2025-W47", since="2025-11-01")


def test_sections_follow_configured_order_then_alphabetical() -> None:
    articles = [view(1, "Zeta", 1), view(2, "Asia-Pacific", 2), view(3, "Europe", 3),
                view(4, "Arctic", 4), view(5, "Europe", 0)]
    blocks, more = group_articles(
        articles, section_order=["Europe", "Asia-Pacific"], section_cap=5, total_cap=50
    )
    assert [b.name for b in blocks] == ["Europe", "Asia-Pacific", "Arctic", "Zeta"]
    assert [a.id for a in blocks[0].articles] == [5, 3]  # newest first
    assert more == ()


def test_section_cap_moves_overflow_to_more_stories_and_total_cap_is_fair() -> None:
    europe = [view(i, "Europe", i) for i in range(1, 7)]  # 6 articles, newest id 1
    asia = [view(10 + i, "Asia-Pacific", i) for i in range(1, 3)]
    blocks, more = group_articles(
        europe + asia, section_order=["Europe", "Asia-Pacific"], section_cap=2, total_cap=6
    )
    assert [a.id for a in blocks[0].articles] == [1, 2]
    assert [a.id for a in blocks[1].articles] == [11, 12]
    assert [a.id for a in more] == [3, 4]  # within the total cap; 5 and 6 are left out
    assert sum(len(b.articles) for b in blocks) + len(more) == 6


def _add_articles(db: Database, when: datetime, count: int, section: str = "Europe") -> None:
    with db.write() as session:
        for i in range(count):
            session.add(Article(
                url=f"https://news.example.org/{section}/{when:%Y%m%d}/{i}",
                title=f"{section} story {i}", section=section,
                published_at=when + timedelta(minutes=i),
            ))


def test_already_sent_articles_are_not_selected_again(db: Database, settings: Settings) -> None:
    """Once an issue went out, its articles stay out of later windows unless asked for."""
    monday = datetime(2025, 11, 17, 10, tzinfo=UTC)
    _add_articles(db, monday, 3)
    first = parse_week("2025-W47", UTC)
    with db.write() as session:
        content = select_issue(session, settings, first)
        assert content.article_count == 3
        issue = freeze_issue(session, content)
        issue.status = IssueStatus.SENT
    # A wider explicit window that covers the same articles selects none of them...
    wide = resolve_window(UTC, since="2025-11-10", until="2025-12-01")
    with db.read() as session:
        assert select_issue(session, settings, wide).is_empty
        again = select_issue(session, settings, wide, include_sent=True)
        assert again.article_count == 3
        # ...while the same window shows the frozen issue, for previews of what went out
        assert select_issue(session, settings, first).article_count == 3
        assert select_issue(session, settings, first).number == 1


def test_selection_uses_database_times_in_utc(db: Database, settings: Settings) -> None:
    """Articles stored with any offset come back UTC-aware and select by instant."""
    local = datetime(2025, 11, 23, 23, 30, tzinfo=TOKYO)  # Sunday night in Tokyo
    with db.write() as session:
        session.add(Article(url="https://news.example.org/late", title="Late", section="Asia",
                            published_at=local))
    tokyo = settings.replace(timezone="Asia/Tokyo")
    with db.read() as session:
        w47 = select_issue(session, tokyo, parse_week("2025-W47", TOKYO))
        w48 = select_issue(session, tokyo, parse_week("2025-W48", TOKYO))
    assert [a.title for b in w47.sections for a in b.articles] == ["Late"]
    assert w47.sections[0].articles[0].published_at == local.astimezone(UTC)
    assert w48.is_empty
