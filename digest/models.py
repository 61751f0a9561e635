"""Typed SQLAlchemy models: articles, subscribers, issues, deliveries and web bookkeeping."""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Named constraints so Alembic batch migrations on SQLite can find them again.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes stored as UTC; SQLite returns naive values, so re-attach UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; attach a time zone first")
        value = value.astimezone(UTC)
        # SQLite compares datetimes as text: store them naive-UTC so ordering is right.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base with a naming convention for constraints."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class SubscriberStatus(enum.StrEnum):
    """Lifecycle of a subscriber; only ``active`` ones receive issues."""

    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class IssueStatus(enum.StrEnum):
    """Lifecycle of an issue: an editable draft, then its send."""

    DRAFT = "draft"  # frozen selection an editor may still change; no deliveries yet
    SENDING = "sending"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    SENT = "sent"


class Placement(enum.StrEnum):
    """How an article came to be in an issue (or not)."""

    AUTO = "auto"  # the automatic selection put it there
    PINNED = "pinned"  # an editor added it: always in the issue, whatever the caps
    DROPPED = "dropped"  # an editor left it out: never in this issue, free for a later one


class DeliveryStatus(enum.StrEnum):
    """Lifecycle of one message to one subscriber.

    ``inflight`` is committed before the message is handed to the backend, so after a crash
    the rows still ``inflight`` (lease expired) are the only possible duplicates.
    """

    PENDING = "pending"
    INFLIGHT = "inflight"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"  # subscriber left the list before their turn


class Article(Base):
    """A stored article from a feed, JSON or CSV import."""

    __tablename__ = "articles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guid: Mapped[str | None] = mapped_column(String(1024), unique=True)
    url: Mapped[str] = mapped_column(String(2048), unique=True)
    title: Mapped[str] = mapped_column(Text)
    dek: Mapped[str] = mapped_column(Text, default="")
    summary: Mapped[str] = mapped_column(Text, default="")
    body_html: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str] = mapped_column(String(300), default="")
    section: Mapped[str] = mapped_column(String(200), default="")
    image_url: Mapped[str] = mapped_column(String(2048), default="")
    image_alt: Mapped[str] = mapped_column(Text, default="")
    image_credit: Mapped[str] = mapped_column(String(500), default="")
    # The photo's size in pixels from feed metadata; 0 when the feed does not say.
    image_width: Mapped[int] = mapped_column(Integer, default=0)
    image_height: Mapped[int] = mapped_column(Integer, default=0)
    published_at: Mapped[datetime] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Subscriber(Base):
    """A person on the list. ``email_key`` (lower-cased) makes the address unique in any case."""

    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(20), default=SubscriberStatus.PENDING, index=True)
    sections: Mapped[list[str]] = mapped_column(JSON, default=list)
    # IANA zone name for deliver_at = "local …"; "" means the publication's zone.
    timezone: Mapped[str] = mapped_column(String(64), default="", server_default="")
    consent_at: Mapped[datetime | None] = mapped_column()
    consent_source: Mapped[str] = mapped_column(String(200), default="")
    confirmed_at: Mapped[datetime | None] = mapped_column()
    unsubscribed_at: Mapped[datetime | None] = mapped_column()
    confirmation_sent_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Issue(Base):
    """One edition, unique per window; its articles are frozen when it is created."""

    __tablename__ = "issues"
    __table_args__ = (UniqueConstraint("window_start", "window_end", name="uq_issues_window"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[int] = mapped_column(Integer, unique=True)
    label: Mapped[str] = mapped_column(String(64), index=True)
    window_start: Mapped[datetime] = mapped_column()
    window_end: Mapped[datetime] = mapped_column()
    status: Mapped[str] = mapped_column(String(20), default=IssueStatus.SENDING)
    subject: Mapped[str] = mapped_column(Text, default="")
    preheader: Mapped[str] = mapped_column(Text, default="")
    intro: Mapped[str] = mapped_column(Text, default="")
    # The lead story an editor chose; None means the first story of the selection.
    lead_article_id: Mapped[int | None] = mapped_column(
        ForeignKey("articles.id", ondelete="SET NULL")
    )
    # The date readers see, fixed when the send starts; a draft's is worked out when shown.
    issue_date: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column()
    # Sender lease: on SQLite one sender holds it; expires when the holder dies.
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    # Delivery rows still to be made (PostgreSQL, large lists): active subscribers with ids
    # rest_from..rest_to, due as computed at rest_moment. The first rows are made with the
    # issue, so sending starts at once; the rest follow, a chunk of ids per INSERT … SELECT.
    rest_from: Mapped[int | None] = mapped_column(Integer)
    rest_to: Mapped[int | None] = mapped_column(Integer)
    rest_moment: Mapped[datetime | None] = mapped_column()

    articles: Mapped[list[IssueArticle]] = relationship(
        back_populates="issue", order_by="IssueArticle.position", cascade="all, delete-orphan"
    )


class IssueArticle(Base):
    """An article's place in an issue: section, order, and whether it is in "more stories"."""

    __tablename__ = "issue_articles"

    issue_id: Mapped[int] = mapped_column(
        ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True
    )
    article_id: Mapped[int] = mapped_column(
        ForeignKey("articles.id", ondelete="RESTRICT"), primary_key=True, index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    section: Mapped[str] = mapped_column(String(200))
    overflow: Mapped[bool] = mapped_column(Boolean, default=False)
    choice: Mapped[str] = mapped_column(String(10), default=Placement.AUTO)

    issue: Mapped[Issue] = relationship(back_populates="articles")
    article: Mapped[Article] = relationship()


#: The partial claim index's predicate. Queries on unfinished rows repeat it word for word
#: (store.outbox._UNFINISHED): SQLite uses a partial index only for a literal match, and
#: PostgreSQL cannot prove it from bound parameters in a prepared (generic) plan.
UNFINISHED_SQL = "status IN ('pending', 'inflight')"


class Delivery(Base):
    """One message of one issue to one subscriber: the outbox row."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("issue_id", "subscriber_id", name="uq_deliveries_issue_subscriber"),
        # The claim query walks this in due order (store.outbox._claimable_ids): rows due
        # later in the day's waves sit after the range it reads.
        # Partial: only unfinished rows, so the sent rows of past issues (millions, after a
        # year of a large list) never enter it and claims cost the same as on a fresh table.
        Index("ix_deliveries_claim", "issue_id", "status", "next_attempt_at", "id",
              postgresql_where=text(UNFINISHED_SQL), sqlite_where=text(UNFINISHED_SQL)),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issue_id: Mapped[int] = mapped_column(ForeignKey("issues.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL"), index=True
    )
    email: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(20), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    last_code: Mapped[int | None] = mapped_column(Integer)
    last_reply: Mapped[str] = mapped_column(Text, default="")
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    sent_at: Mapped[datetime | None] = mapped_column()


class SendRate(Base):
    """A token bucket shared by every sender process (``--rate N/s``)."""

    __tablename__ = "send_rate"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    tokens: Mapped[float] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column()


class Suppression(Base):
    """An erased, bounced or complaining address kept only as a hash, so it is not re-added."""

    __tablename__ = "suppressions"

    email_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(50))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RateLimitHit(Base):
    """Fixed-window counters for the web endpoints, shared by all workers through the DB."""

    __tablename__ = "rate_limits"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class WebhookEvent(Base):
    """Event ids already processed, so a replayed webhook does nothing."""

    __tablename__ = "webhook_events"

    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class BounceKind(enum.StrEnum):
    """What a bounce or complaint report said about one recipient."""

    HARD = "hard"  # 5.1.x: the address does not exist; bounced at once
    SOFT = "soft"  # a failure that may pass (mailbox full, …); counted
    POLICY = "policy"  # X.7.x: refused for the sender's reputation, not the reader; kept only
    DELAYED = "delayed"  # still being retried by the relay; kept only
    COMPLAINT = "complaint"  # ARF abuse report: unsubscribed and suppressed at once


class BounceEvent(Base):
    """One recipient of one bounce or complaint report, with what it did.

    ``fingerprint`` (a hash of the report and the recipient) makes reading the same mail twice,
    e.g. after a crash between the commit and moving it out of the mailbox, a no-op.
    """

    __tablename__ = "bounce_events"
    __table_args__ = (Index("ix_bounce_events_subscriber", "subscriber_id", "received_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(20))
    delivery_id: Mapped[int | None] = mapped_column(
        ForeignKey("deliveries.id", ondelete="SET NULL"), index=True
    )
    issue_id: Mapped[int | None] = mapped_column(
        ForeignKey("issues.id", ondelete="SET NULL"), index=True
    )
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL")
    )
    email: Mapped[str] = mapped_column(String(320), default="")
    status_code: Mapped[str] = mapped_column(String(20), default="")
    diagnostic: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(20), default="")  # imap, pop3, smtp, lmtp
    matched_by: Mapped[str] = mapped_column(String(20), default="")  # verp, message-id, address
    action: Mapped[str] = mapped_column(String(40), default="")  # what it did to the subscriber
