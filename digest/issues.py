"""Weekly windows, article selection and grouping into an issue's sections."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


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
