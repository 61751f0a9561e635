"""Queries for articles: bulk upsert matched by guid, then URL; counts and look-ups.

Listing a window's articles lives in ``digest.store.issues.articles_in_window``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.orm import Session

from digest.models import Article

if TYPE_CHECKING:
    from digest.articles import ArticleIn

# Rows per look-up query: keeps each IN list (guids + URLs) far below SQLite's
# variable limit while still loading a whole typical feed in one query.
CHUNK = 500

#: The columns an import writes; the rest (id, created_at, updated_at) the store manages.
FIELDS = (
    "guid", "url", "title", "dek", "summary", "body_html", "author", "section",
    "image_url", "image_alt", "image_credit", "image_width", "image_height", "published_at",
)


@dataclass(frozen=True, slots=True)
class UpsertCounts:
    """What an upsert did: rows added, changed, found identical, and refused."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    conflicts: int = 0  # matched one article but its URL is another article's


def _chunks(items: Sequence[ArticleIn], size: int) -> Iterator[Sequence[ArticleIn]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _existing(session: Session, batch: Sequence[ArticleIn]) -> list[dict[str, Any]]:
    """Stored rows whose guid or URL appears in batch, as plain dicts (one query)."""
    guids = [a.guid for a in batch if a.guid]
    urls = [a.url for a in batch]
    # An empty IN list is fine: SQLAlchemy renders it as an always-false test.
    condition = or_(Article.url.in_(urls), Article.guid.in_(guids))
    columns = [Article.id, *(getattr(Article, name) for name in FIELDS)]
    return [dict(row._mapping) for row in session.execute(select(*columns).where(condition))]


def upsert_articles(
    session: Session, articles: Sequence[ArticleIn], *, now: datetime
) -> UpsertCounts:
    """Insert new articles and update known ones, matched by guid first, then by URL.

    ``articles`` must not repeat a guid or URL (the importer removes repeats). An article
    without a date gets ``now`` when inserted and keeps its stored date when updated, so a
    dateless feed item does not move into a new week on every import. A URL match keeps
    the stored guid when there is one. Unchanged rows are not written.
    """
    added = updated = unchanged = conflicts = 0
    for batch in _chunks(articles, CHUNK):
        rows = _existing(session, batch)
        by_guid = {row["guid"]: row for row in rows if row["guid"]}
        by_url = {row["url"]: row for row in rows}
        claimed: set[int] = set()
        targets: list[dict[str, Any] | None] = []
        # Pass 1: guid matches win, so a URL match cannot take an article first.
        for article in batch:
            row = by_guid.get(article.guid) if article.guid else None
            if row is not None:
                claimed.add(row["id"])
            targets.append(row)
        # Pass 2: URL matches for the rest, among articles no guid claimed.
        for index, article in enumerate(batch):
            if targets[index] is None:
                row = by_url.get(article.url)
                if row is not None and row["id"] not in claimed:
                    claimed.add(row["id"])
                    targets[index] = row

        url_owner = {row["url"]: row["id"] for row in rows}
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        # Matched articles first: one may give up a URL that a new article here takes.
        pairs = sorted(zip(batch, targets, strict=True), key=lambda pair: pair[1] is None)
        for article, row in pairs:
            values = {name: getattr(article, name) for name in FIELDS}
            if row is None:
                if article.url in url_owner:
                    conflicts += 1  # its URL belongs to an article another item matched
                    continue
                values["published_at"] = article.published_at or now
                values["created_at"] = values["updated_at"] = now
                url_owner[article.url] = -1
                inserts.append(values)
                continue
            owner = url_owner.get(article.url)
            if owner is not None and owner != row["id"]:
                conflicts += 1
                continue
            url_owner.pop(row["url"], None)
            url_owner[article.url] = row["id"]
            if row["guid"]:
                values["guid"] = row["guid"]
            if article.published_at is None:
                values["published_at"] = row["published_at"]
            if all(values[name] == row[name] for name in FIELDS):
                unchanged += 1
                continue
            values["id"] = row["id"]
            values["updated_at"] = now
            updates.append(values)
        if updates:
            session.execute(update(Article), updates)
        if inserts:
            session.execute(insert(Article), inserts)
        added += len(inserts)
        updated += len(updates)
    return UpsertCounts(added, updated, unchanged, conflicts)


def count_articles(session: Session) -> int:
    """How many articles are stored."""
    return session.scalar(select(func.count()).select_from(Article)) or 0


def articles_by_url(session: Session, urls: Iterable[str]) -> dict[str, Article]:
    """Stored articles for these URLs, keyed by URL (missing ones are absent)."""
    wanted = list(urls)
    found: dict[str, Article] = {}
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        for article in session.scalars(select(Article).where(Article.url.in_(chunk))):
            found[article.url] = article
    return found
