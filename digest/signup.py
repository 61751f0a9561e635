"""The public sign-up policy: origin rule, rate limits, honeypot, time trap, one answer.

``decide()`` turns one sign-up post into one ``Outcome`` that the web route presents; it
knows nothing of Flask. Whatever depends on whether the address is already known (the
subscriber row, the confirmation email) is not done here but returned as ``Outcome.pending``
for ``complete()`` to do after the response, so the answer and its timing are the same for
every address.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from digest import subscribers, tokens
from digest.config import Settings
from digest.errors import InputError
from digest.local_time import zone
from digest.models import Subscriber
from digest.store import web as web_store

#: The sign-up form's name field; longer names are cut.
FORM_NAME_MAX = 100
#: Fixed rate-limit windows for POST /subscribe, per client IP and per address.
RATE_WINDOW = timedelta(hours=1)
#: One sign-up in this many also forgets rate-limit windows long gone.
PRUNE_EVERY = 100

HONEYPOT_FIELD = "website"
TOKEN_FIELD = "form_token"  # noqa: S105 - a form field name, not a secret
TIMEZONE_FIELD = "timezone"


class Verdict(StrEnum):
    """What the route shows for a sign-up post."""

    #: The one answer for every address, and for bots caught by a trap.
    ACCEPTED = "accepted"
    #: A browser post from a site that is not ours and not in allowed_origins.
    FORBIDDEN = "forbidden"
    #: The form could not be read or the address is not valid: the form again, with the reason.
    INVALID = "invalid"
    #: No valid time-trap token (a static page, or JavaScript off): our form with a fresh one.
    NEEDS_TOKEN = "needs-token"  # noqa: S105 - a verdict name, not a secret
    #: Over the per-IP or per-address limit.
    RATE_LIMITED = "rate-limited"


@dataclass(frozen=True)
class SignupForm:
    """The fields of one sign-up post, as text; ``error`` if the request could not be read."""

    email: str = ""
    name: str = ""
    sections: list[str] = field(default_factory=list)
    honeypot: str = ""
    timezone: str = ""  # the browser's Intl time zone, from a hidden field
    form_token: str = ""
    next: str = ""
    error: str = ""


@dataclass(frozen=True)
class Client:
    """Who posted: the rate-limit key of their address and the browser's origin headers."""

    key: str
    origin: str | None = None
    fetch_site: str | None = None


@dataclass(frozen=True)
class PendingSignup:
    """The work for a valid sign-up, done after the response: record it, maybe confirm."""

    address: subscribers.Address
    name: str
    sections: list[str]
    source: str
    now: datetime
    timezone: str = ""


@dataclass(frozen=True)
class Outcome:
    """The result of decide(): a verdict, the reason for INVALID, and the deferred work."""

    verdict: Verdict
    error: str = ""
    trap: str = ""
    pending: PendingSignup | None = None


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lower-cased, default ports dropped; "" if none."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ""
    try:
        port = parts.port
    except ValueError:
        return ""
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def own_origin(settings: Settings) -> frozenset[str]:
    """The origin of base_url alone (digest's own pages)."""
    return frozenset({origin_of(settings.base_url)} - {""})


def allowed_origins(settings: Settings) -> frozenset[str]:
    """The base URL's origin plus settings.allowed_origins (no wildcards)."""
    found = set(own_origin(settings))
    found.update(origin_of(o) for o in settings.allowed_origins)
    found.discard("")
    return frozenset(found)


def origin_allowed(origin: str | None, fetch_site: str | None, allowed: frozenset[str]) -> bool:
    """Whether a POST may come from where the browser says it comes from.

    ``Sec-Fetch-Site: same-origin`` is the browser saying the page that posted is ours: the
    header cannot be set by a page, and an opaque origin (a sandboxed iframe, even on our
    own site) is "cross-site". Otherwise the Origin must be one of ``allowed``; ``null``
    never is. A request with neither header is not from a browser form (curl, a server).
    """
    site = (fetch_site or "").strip().lower()
    if site == "same-origin":
        return True
    if site and site not in ("same-site", "cross-site"):
        return False  # "none": a navigation the user typed, never a form post
    if origin is None:
        return not site
    return origin_of(origin) in allowed


def _over_limit(session: Session, key: str, limit: int, now: datetime) -> bool:
    if limit <= 0:
        return False
    seconds = int(RATE_WINDOW.total_seconds())
    start = datetime.fromtimestamp(int(now.timestamp()) // seconds * seconds, now.tzinfo)
    return web_store.hit(session, key, start) > limit


def decide(
    session: Session,
    settings: Settings,
    form: SignupForm,
    client: Client,
    *,
    allowed: frozenset[str],
    now: datetime,
    clock: float,
) -> Outcome:
    """Apply the sign-up policy to one post; the caller commits once and presents the outcome.

    The order matters: the origin first (nothing is counted for a foreign site), then the
    per-IP limit (bots pay for every try), the honeypot and time trap (bots get the normal
    answer), the address, and the per-address limit. The database work here is the same for
    every valid address, new or known; ``now`` is the time stored, ``clock`` the Unix time
    the time trap compares against.
    """
    if not origin_allowed(client.origin, client.fetch_site, allowed):
        return Outcome(Verdict.FORBIDDEN)
    if form.error:
        return Outcome(Verdict.INVALID, error=form.error)
    if _over_limit(session, f"subscribe-ip:{client.key}", settings.subscribe_ip_limit, now):
        return Outcome(Verdict.RATE_LIMITED)
    if form.honeypot.strip():
        return Outcome(Verdict.ACCEPTED, trap="honeypot")
    check = tokens.check_form_token(settings, form.form_token, clock)
    if check == "invalid":
        return Outcome(Verdict.NEEDS_TOKEN)
    if check == "too-fast":
        return Outcome(Verdict.ACCEPTED, trap="too-fast")
    try:
        address = subscribers.normalise(form.email)
        name = subscribers.clean_name(form.name, FORM_NAME_MAX)
        sections = subscribers.resolve_sections(form.sections, settings.sections)
    except InputError as exc:
        return Outcome(Verdict.INVALID, error=str(exc))
    if _over_limit(session, f"subscribe-email:{address.hash}",
                   settings.subscribe_email_limit, now):
        return Outcome(Verdict.RATE_LIMITED)
    source = "web form" + (f" on {origin_of(client.origin)}"
                           if client.origin and origin_of(client.origin) else "")
    # A zone the browser made up or this server does not know is dropped, not an error:
    # the reader did not type it and cannot fix it; they get the publication's zone.
    zone_name = form.timezone.strip() if zone(form.timezone) is not None else ""
    return Outcome(Verdict.ACCEPTED, pending=PendingSignup(
        address=address, name=name, sections=list(sections), source=source, now=now,
        timezone=zone_name,
    ))


class Backlog:
    """Decided sign-ups waiting for their responses to go out; recorded together.

    One transaction for everything that piled up keeps the work after the responses cheaper
    than the requests that caused it, so a burst of sign-ups cannot outgrow it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[PendingSignup] = []

    def add(self, pending: PendingSignup) -> bool:
        """Queue a sign-up; True if the backlog was empty, so the caller schedules a take()."""
        with self._lock:
            self._items.append(pending)
            return len(self._items) == 1

    def take(self) -> list[PendingSignup]:
        """Everything queued so far, oldest first; the backlog is empty afterwards."""
        with self._lock:
            items, self._items = self._items, []
            return items


def complete(session: Session, batch: Sequence[PendingSignup]) -> list[Subscriber]:
    """Record decided sign-ups; the subscribers to send a confirmation to.

    Runs after the responses (see ``decide``). Now and then it also forgets rate-limit
    windows long gone, which keeps that cleanup off the request path as well.
    """
    if batch and random.random() < len(batch) / PRUNE_EVERY:
        web_store.prune_rate_limits(session, batch[-1].now - 2 * RATE_WINDOW)
    found = []
    for pending in batch:
        subscriber = subscribers.request_subscription(
            session, pending.address, name=pending.name, sections=pending.sections,
            source=pending.source, now=pending.now, timezone=pending.timezone,
        )
        if subscriber is not None:
            found.append(subscriber)
    return found

