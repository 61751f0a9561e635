"""The public web app: subscribe (double opt-in), confirm, unsubscribe (RFC 8058), preferences,
the issue archive and signed webhooks. ``digest serve`` runs it under waitress.

Routes are thin: they parse the request, call one domain function (digest.signup for the
sign-up policy, digest.subscribers for the link pages) inside one database session per
request, commit once, and present the outcome. A sign-up's row and confirmation email are
handed to the background mailer, to be done after the response.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import ipaddress
import json
import logging
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import jinja2
from flask import Flask, Response, current_app, g, redirect, render_template, request, url_for
from markupsafe import Markup
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.exceptions import Forbidden, HTTPException, NotFound
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wsgi import ClosingIterator

from digest import signup, subscribers, tokens
from digest.config import Settings, load_settings
from digest.confirmation import BackendFactory, ConfirmationMailer, template_loader
from digest.db import READ_ONLY, Database
from digest.errors import InputError, NotFoundError
from digest.models import Subscriber, SubscriberStatus, utcnow
from digest.signup import (
    FORM_NAME_MAX,
    HONEYPOT_FIELD,
    RATE_WINDOW,
    TIMEZONE_FIELD,
    TOKEN_FIELD,
    SignupForm,
    Verdict,
    allowed_origins,
    origin_of,
)
from digest.store import web as web_store

log = logging.getLogger("digest.web")

# Fills the sign-up form's hidden time-zone field from the browser (deliver_at = "local …").
# A constant, so the page's CSP can allow exactly this script by its hash and nothing else.
TIMEZONE_SCRIPT = (
    'try{document.getElementById("tz").value='
    'Intl.DateTimeFormat().resolvedOptions().timeZone||""}catch(e){}'
)
_TIMEZONE_SCRIPT_SRC = "'sha256-" + base64.b64encode(
    hashlib.sha256(TIMEZONE_SCRIPT.encode()).digest()
).decode() + "'"
access_log = logging.getLogger("digest.access")

#: Seconds (least, most) a sign-up's row and email wait after its response.
SIGNUP_DELAY = (0.05, 0.25)
#: Webhook event ids are kept this long: far past the signature tolerance.
EVENT_RETENTION = timedelta(days=1)
#: Largest request body accepted (forms, JSON, webhooks).
MAX_BODY = 64 * 1024
#: Most events one POST /webhooks/events may carry.
MAX_EVENTS = 1000
#: Rendered archive issues kept in memory (a sent issue never changes).
ARCHIVE_CACHE = 16

_TOKEN_PATH = re.compile(r"^/(confirm|u|preferences)/[^/]+")
# For the access log: anywhere in SCRIPT_NAME + PATH_INFO, any case, doubled slashes too.
_TOKEN_SEGMENT = re.compile(r"/(confirm|u|preferences)/+[^/]+", re.IGNORECASE)
# A `next` URL with these is read differently by urlsplit (which drops tabs and line breaks
# and takes a backslash as part of the user name) and by browsers; it is never followed.
_UNSAFE_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_CORS_PATHS = ("/subscribe", "/subscribe/token")


# --------------------------------------------------------------------------- app state


@dataclass
class WebState:
    """What the routes share: settings, database, the confirmation mailer, allowed origins."""

    settings: Settings
    db: Database
    mailer: ConfirmationMailer
    write_sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]
    origins: frozenset[str]
    own_origins: frozenset[str]
    backlog: signup.Backlog = field(default_factory=signup.Backlog)
    archive: OrderedDict[str, str] = field(default_factory=OrderedDict)
    archive_lock: threading.Lock = field(default_factory=threading.Lock)
    # SQLite has one writer at a time; its busy handler polls with sleeps of up to 100 ms,
    # so threads of this process queue on a lock instead (woken at once when it is free).
    # Reentrant: without a mailer thread (tests) a sign-up is recorded inside its request.
    write_lock: threading.RLock | None = None


def _state() -> WebState:
    state: WebState = current_app.extensions["digest"]
    return state


def client_key(remote_addr: str | None) -> str:
    """The rate-limit key for a client address; IPv6 is grouped by /64 (one customer's net)."""
    try:
        ip = ipaddress.ip_address(remote_addr or "")
    except ValueError:
        return remote_addr or "unknown"
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


# --------------------------------------------------------------------------- sessions


def db_session(*, write: bool = False) -> Session:
    """The request's one database session (write: SQLite BEGIN IMMEDIATE); closed at teardown."""
    session: Session | None = g.get("_digest_session")
    if session is None:
        state = _state()
        if write and state.write_lock is not None:
            state.write_lock.acquire()
            g._digest_lock = state.write_lock
        session = (state.write_sessions if write else state.read_sessions)()
        g._digest_session = session
        g._digest_write = write
    elif write and not g.get("_digest_write"):
        raise RuntimeError("a read-only session is already open in this request")
    return session


def _close_session(_exc: BaseException | None) -> None:
    session: Session | None = g.pop("_digest_session", None)
    lock: threading.RLock | None = g.pop("_digest_lock", None)
    try:
        if session is not None:
            session.close()  # rolls back whatever the view did not commit
    finally:
        if lock is not None:
            lock.release()


# --------------------------------------------------------------------------- logging


def redact_path(path: str) -> str:
    """A request path safe to log: link tokens replaced, length bounded."""
    return _TOKEN_SEGMENT.sub(lambda m: f"/{m.group(1)}/[token]", path)[:200]


class AccessLog:
    """WSGI middleware: one JSON line per request (method, redacted path, status, ms, client)."""

    def __init__(self, app: Callable[..., Any], logger: logging.Logger = access_log) -> None:
        self.app = app
        self.logger = logger

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        started = time.perf_counter()
        status: list[str] = []

        def capture(code: str, headers: Any, exc_info: Any = None) -> Any:
            status[:] = [code]
            return start_response(code, headers, exc_info)

        def done() -> None:
            self.logger.info(json.dumps({
                "event": "request",
                "method": environ.get("REQUEST_METHOD", ""),
                "path": redact_path(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")),
                "status": int(status[0].split(" ", 1)[0]) if status else 500,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "remote_addr": environ.get("REMOTE_ADDR", ""),
            }))

        try:
            return ClosingIterator(self.app(environ, capture), [done])
        except Exception:
            done()
            raise


def configure_logging(level: int = logging.INFO) -> None:
    """Send digest's JSON log lines to stderr, one per line (for digest serve)."""
    logger = logging.getLogger("digest")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def _event(name: str, **fields: Any) -> None:
    log.info(json.dumps({"event": name, **fields}, default=str))


# --------------------------------------------------------------------------- page theme

#: The [theme] colours the pages use, as CSS custom properties --digest-<name>: theme_<name>
#: in light mode and theme_dark_<name> under prefers-color-scheme: dark.
PAGE_COLOURS = ("text", "background", "surface", "muted", "accent", "link", "rule")
PAGE_FONTS = ("heading_font", "body_font")
# What may reach the <style> block unescaped: a hex colour, or a list of font names (no <,
# &, ; or braces). Settings.validate() checks the same; a Settings built without it that
# holds anything else gets the default rather than a way out of the CSS.
_CSS_COLOUR = re.compile(r"#[0-9a-fA-F]{3,8}")
_CSS_FONTS = re.compile(r"[A-Za-z0-9 ,'-]{1,200}")
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Settings)}


def page_theme(settings: Settings) -> dict[str, dict[str, Markup]]:
    """The pages' colours and fonts from the [theme] settings: {"light": ..., "dark": ...}."""

    def pick(setting: str, pattern: re.Pattern[str]) -> Markup:
        value = getattr(settings, setting)
        safe = value if isinstance(value, str) and pattern.fullmatch(value) else _DEFAULTS[setting]
        # Markup: quotes in font names must reach the CSS as quotes, not as &#39;.
        return Markup(safe)  # noqa: S704 - matched a pattern without <, &, ; or braces

    light = {name: pick(f"theme_{name}", _CSS_COLOUR) for name in PAGE_COLOURS}
    light.update({name.replace("_", "-"): pick(f"theme_{name}", _CSS_FONTS)
                  for name in PAGE_FONTS})
    dark = {name: pick(f"theme_dark_{name}", _CSS_COLOUR) for name in PAGE_COLOURS}
    return {"light": light, "dark": dark}


# --------------------------------------------------------------------------- app factory


def create_app(
    settings: Settings | None = None, test_config: Mapping[str, Any] | None = None
) -> Flask:
    """Build the WSGI app. test_config may set DIGEST_MAIL_FACTORY (a backend factory),
    DIGEST_MAIL_BACKGROUND (False sends confirmations inline) and DIGEST_DATABASE."""
    if settings is None:
        settings = load_settings().settings
    tokens.require_secret_key(settings)
    app = Flask("digest", static_folder=None, template_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY, DIGEST_MAIL_BACKGROUND=True)
    if test_config:
        app.config.update(test_config)
    db = app.config.get("DIGEST_DATABASE") or Database(settings.database_url)
    factory: BackendFactory | None = app.config.get("DIGEST_MAIL_FACTORY")
    mailer = ConfirmationMailer(
        settings, factory, background=bool(app.config["DIGEST_MAIL_BACKGROUND"])
    )
    app.extensions["digest"] = WebState(
        settings=settings,
        db=db,
        mailer=mailer,
        write_sessions=sessionmaker(db.engine, expire_on_commit=False),
        read_sessions=sessionmaker(
            db.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False
        ),
        origins=allowed_origins(settings),
        own_origins=signup.own_origin(settings),
        write_lock=threading.RLock() if db.is_sqlite else None,
    )
    app.jinja_loader = template_loader(settings.templates_dir)
    app.jinja_env.undefined = jinja2.StrictUndefined
    app.jinja_env.globals.update(
        newsletter_name=settings.newsletter_name,
        language=settings.language,
        postal_address=settings.postal_address,
        theme=page_theme(settings),
        name_max=FORM_NAME_MAX,
        honeypot_field=HONEYPOT_FIELD,
        token_field=TOKEN_FIELD,
        timezone_field=TIMEZONE_FIELD,
        timezone_script=Markup(f"<script>{TIMEZONE_SCRIPT}</script>"),  # noqa: S704 - constant
    )
    app.teardown_request(_close_session)
    app.after_request(_headers)
    for code in (400, 403, 404, 405, 413, 415, 429, 500):
        app.register_error_handler(code, _error_page)
    _routes(app)
    wsgi: Callable[..., Any] = AccessLog(app.wsgi_app)
    if settings.trusted_proxies:
        # Only as many X-Forwarded-* hops as there are proxies we run; the rest is spoofable.
        # Under `digest serve` waitress has already cut the headers to those hops (see
        # waitress_options), so this finds the same client; it is here for other servers.
        n = settings.trusted_proxies
        wsgi = ProxyFix(wsgi, x_for=n, x_proto=n, x_host=n)
    app.wsgi_app = wsgi  # type: ignore[method-assign]
    return app


def waitress_options(settings: Settings) -> dict[str, Any]:
    """waitress.serve() keywords for the proxies in front of ``digest serve``.

    Without them waitress clears X-Forwarded-* before the app sees them (its
    clear_untrusted_proxy_headers default), and every visitor counts as the proxy's address.
    """
    if not settings.trusted_proxies:
        return {}
    return {
        "trusted_proxy": settings.trusted_proxy_address,
        "trusted_proxy_count": settings.trusted_proxies,
        "trusted_proxy_headers": {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"},
        # A proxy that connects from another address is a configuration mistake: say so.
        "log_untrusted_proxy_headers": True,
    }


# --------------------------------------------------------------------------- responses


def _wants_json() -> bool:
    return request.path.startswith("/webhooks/") or request.is_json or (
        request.accept_mimetypes.best_match(["text/html", "application/json"])
        == "application/json"
    )


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, mimetype="application/json")


def _page(template: str, status: int = 200, **context: Any) -> Response:
    return Response(render_template(f"pages/{template}", **context), status=status,
                    mimetype="text/html")


_MESSAGES = {
    400: "The request could not be understood.",
    403: "This form cannot be used from that website.",
    404: "There is no page at this address.",
    405: "This page does not accept that kind of request.",
    413: "The request is too large.",
    415: "Send the form as a web form or as JSON.",
    429: "Too many requests. Please try again in an hour.",
    500: "Something went wrong on our side. Please try again later.",
}


def _error_page(error: Exception) -> Response:
    status = error.code if isinstance(error, HTTPException) and error.code else 500
    if status >= 500:
        log.exception("unhandled error", exc_info=error)
    message = _MESSAGES.get(status, "The request could not be handled.")
    response = (
        _json({"error": message}, status) if _wants_json()
        else _page("error.html", status, title=f"Error {status}", message=message)
    )
    if status == 429:
        response.headers["Retry-After"] = str(int(RATE_WINDOW.total_seconds()))
    return response


def _headers(response: Response) -> Response:
    state = _state()
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    # Only the origin leaves our site, never a token path. Not "no-referrer": with it
    # Chromium sends "Origin: null" on our own pages' form posts, and the origin rule
    # cannot tell them from a sandboxed frame's.
    headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
    headers.setdefault("X-Frame-Options", "DENY")
    form_action = " ".join(["'self'", *sorted(state.origins)])
    headers.setdefault(
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        + (f"script-src {_TIMEZONE_SCRIPT_SRC}; " if request.path == "/subscribe" else "")
        + f"form-action {form_action}; frame-ancestors 'none'; base-uri 'none'",
    )
    if request.path != "/archive" and not request.path.startswith("/archive/"):
        headers.setdefault("Cache-Control", "no-store")
    if _TOKEN_PATH.match(request.path):
        headers.setdefault("X-Robots-Tag", "noindex")
    if request.path in _CORS_PATHS:
        # CORS only ever echoes an allowed origin; never a wildcard.
        headers.add("Vary", "Origin")
        origin = request.headers.get("Origin")
        if origin and origin_of(origin) in state.origins:
            headers["Access-Control-Allow-Origin"] = origin
    return response


# --------------------------------------------------------------------------- subscribe


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _read_fields() -> SignupForm:
    """The sign-up post as text fields; a form with ``error`` set if it cannot be read."""
    if request.is_json:
        try:
            data = request.get_json(silent=True)
        except RecursionError:  # nested deeper than the parser's stack: not a sign-up
            data = None
        if not isinstance(data, dict):
            return SignupForm(error="send a JSON object")
        raw_sections = data.get("sections") or []
        if isinstance(raw_sections, str):
            raw_sections = subscribers.split_sections(raw_sections)
        if not isinstance(raw_sections, list):
            return SignupForm(error="sections must be a list of section names")
        return SignupForm(
            email=_as_text(data.get("email")), name=_as_text(data.get("name")),
            sections=[_as_text(s) for s in raw_sections],
            honeypot=_as_text(data.get(HONEYPOT_FIELD)),
            form_token=_as_text(data.get(TOKEN_FIELD)),
            timezone=_as_text(data.get(TIMEZONE_FIELD)),
        )
    if request.mimetype not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return SignupForm(error="send the form as application/x-www-form-urlencoded or JSON")
    form = request.form
    return SignupForm(
        email=form.get("email", ""), name=form.get("name", ""),
        sections=form.getlist("sections") or form.getlist("section"),
        honeypot=form.get(HONEYPOT_FIELD, ""), form_token=form.get(TOKEN_FIELD, ""),
        next=form.get("next", ""), timezone=form.get(TIMEZONE_FIELD, ""),
    )


def _client() -> signup.Client:
    return signup.Client(
        key=client_key(request.remote_addr), origin=request.headers.get("Origin"),
        fetch_site=request.headers.get("Sec-Fetch-Site"),
    )


def _accepted(fields: SignupForm) -> Response:
    """The one answer for every address: new, known, unsubscribed, suppressed or a bot."""
    if request.is_json:
        return _json({
            "status": "accepted",
            "message": "If this address can be subscribed, a confirmation email is on its way.",
        }, 202)
    target = _allowed_next(fields.next) or url_for("thanks")
    return redirect(target, 303)  # type: ignore[return-value]


def _allowed_next(url: str) -> str:
    """url if it is plainly on an allowed origin (no open redirect), else ""."""
    if not url or _UNSAFE_URL_CHARS.search(url) or origin_of(url) not in _state().origins:
        return ""
    return url


def _subscribe_form(status: int = 200, *, error: str = "", notice: str = "",
                    fields: SignupForm | None = None) -> Response:
    state = _state()
    return _page(
        "subscribe.html", status,
        error=error, notice=notice,
        email=fields.email if fields else "", name=fields.name if fields else "",
        chosen=fields.sections if fields else [],
        next=_allowed_next(fields.next) if fields else "",
        sections=state.settings.sections, form_token=tokens.form_token(state.settings),
    )


def _too_many() -> Response:
    if request.is_json:
        response = _json({"error": _MESSAGES[429]}, 429)
    else:
        response = _page("error.html", 429, title="Too many requests", message=_MESSAGES[429])
    response.headers["Retry-After"] = str(int(RATE_WINDOW.total_seconds()))
    return response


def _present(outcome: signup.Outcome, fields: SignupForm) -> Response:
    """The response for a sign-up outcome, as JSON or as a page."""
    verdict = outcome.verdict
    if verdict is Verdict.FORBIDDEN:
        return _error_page(Forbidden())
    if verdict is Verdict.RATE_LIMITED:
        return _too_many()
    if verdict is Verdict.INVALID:
        if request.is_json:
            return _json({"error": outcome.error}, 400)
        return _subscribe_form(400, error=outcome.error,
                               fields=None if fields.error else fields)
    if verdict is Verdict.NEEDS_TOKEN:
        # A static page without its script, or a bot: a person gets our own form back with
        # a fresh token and the values filled in; nothing is stored.
        if request.is_json:
            return _json({"error": f"missing or expired {TOKEN_FIELD}: GET /subscribe/token "
                                   "first, then post after a few seconds"}, 400)
        return _subscribe_form(
            notice="Almost done: check your address and press Subscribe.", fields=fields
        )
    if outcome.trap:
        _event("subscribe_trap", trap=outcome.trap)
    return _accepted(fields)


@contextmanager
def _background_session(state: WebState) -> Iterator[Session]:
    """A write session outside any request (the mailer's thread), with the SQLite lock."""
    lock = state.write_lock or contextlib.nullcontext()
    with lock, state.write_sessions() as session:
        yield session


def _record_after(response: Response, state: WebState, pending: signup.PendingSignup) -> None:
    """Record a decided sign-up and send its confirmation once the response is out."""

    def record() -> list[Subscriber]:
        batch = state.backlog.take()
        try:
            with _background_session(state) as session:
                found = signup.complete(session, batch)
                session.commit()
        except Exception as exc:
            log.error(json.dumps({"event": "signup_failed", "count": len(batch),
                                  "error": f"{type(exc).__name__}: {exc}"}))
            raise
        return found

    def schedule() -> None:
        if state.backlog.add(pending):  # else the record() already queued takes this one too
            state.mailer.submit(record, delay=delay)

    if state.mailer.background:
        # Queued when the server closes the response, and then held back a little longer
        # (waitress sends the bytes after that), with jitter, so that the work competes
        # neither with this answer nor predictably with the prober's next request.
        delay = random.uniform(*SIGNUP_DELAY)
        response.call_on_close(schedule)
    else:
        delay = 0.0
        schedule()


def subscribe_post() -> Response:
    """POST /subscribe: double opt-in sign-up from the form or JSON."""
    state = _state()
    fields = _read_fields()
    session = db_session(write=True)
    outcome = signup.decide(session, state.settings, fields, _client(),
                            allowed=state.origins, now=utcnow(), clock=time.time())
    session.commit()
    response = _present(outcome, fields)
    if outcome.pending is not None:
        _record_after(response, state, outcome.pending)
    return response


def subscribe_preflight() -> Response:
    """OPTIONS /subscribe: CORS preflight for JSON posts from allowed origins."""
    origin = request.headers.get("Origin", "")
    if origin_of(origin) not in _state().origins:
        return Response(status=403)
    response = Response(status=204)
    response.headers["Access-Control-Allow-Methods"] = "POST"
    response.headers["Access-Control-Allow-Headers"] = "Content-Type"
    response.headers["Access-Control-Max-Age"] = "600"
    return response


def subscribe_token() -> Response:
    """GET /subscribe/token: a fresh time-trap token for a form embedded on another site."""
    settings = _state().settings
    return _json({"token": tokens.form_token(settings),
                  "min_seconds": settings.subscribe_min_seconds})


# --------------------------------------------------------------------------- link pages


def _bad_link(exc: tokens.TokenError) -> Response:
    if isinstance(exc, tokens.TokenExpired):
        return _page("link_error.html", 400, title="This link has expired",
                     message="Confirmation links work for a limited time. Subscribe again "
                             "to get a new one.")
    return _page("link_error.html", 400, title="This link does not work",
                 message="The link is incomplete or was changed. Copy the whole link from "
                         "the email, or subscribe again.")


def confirm_view(token: str) -> Response:
    """GET shows a button; POST confirms the subscription (GET never changes anything)."""
    state = _state()
    try:
        data = tokens.read_token(state.settings, "confirm", token)
    except tokens.TokenError as exc:
        return _bad_link(exc)
    if request.method != "POST":
        return _page("confirm.html")
    session = db_session(write=True)
    subscriber = subscribers.confirm(session, data)
    session.commit()
    if subscriber is None:
        return _page("link_error.html", 400, title="This link no longer works",
                     message="This subscription was cancelled or removed. Subscribe again "
                             "if you want to receive the newsletter.")
    _event("subscriber_confirmed", subscriber_id=subscriber.id)
    return _page("confirmed.html", preferences_url=tokens.preferences_url(state.settings,
                                                                          subscriber))


def unsubscribe_view(token: str) -> Response:
    """GET shows a button; POST unsubscribes at once, including RFC 8058 one-click posts."""
    state = _state()
    try:
        data = tokens.read_token(state.settings, "unsubscribe", token)
    except tokens.TokenError as exc:
        return _bad_link(exc)
    if request.method != "POST":
        return _page("unsubscribe.html")
    session = db_session(write=True)
    subscribers.unsubscribe(session, data)
    session.commit()
    # RFC 8058 §3.2: the mailbox provider POSTs "List-Unsubscribe=One-Click" without cookies
    # and expects the unsubscribe to happen now; answer 200 with no redirect. The button on
    # our own page gets the same treatment, so either way the second post is a no-op.
    if request.form.get("List-Unsubscribe") == "One-Click":
        return Response("You are unsubscribed.\n", 200, mimetype="text/plain")
    return _page("unsubscribed.html")


def preferences_view(token: str) -> Response:
    """GET shows name and sections; POST saves them, or unsubscribes."""
    state = _state()
    settings = state.settings
    try:
        data = tokens.read_token(settings, "preferences", token)
    except tokens.TokenError as exc:
        return _bad_link(exc)
    if request.method != "POST":
        subscriber = subscribers.by_token(db_session(), data)
        if subscriber is None:
            return _page("link_error.html", 400, title="This link no longer works",
                         message="This address is not on the list any more.")
        return _page("preferences.html", subscriber=subscriber, sections=settings.sections,
                     subscribed=subscriber.status in (SubscriberStatus.ACTIVE,
                                                      SubscriberStatus.PENDING),
                     saved=False, error="")
    # The sign-up origin rule, for digest's own pages only: no partner site posts here.
    client = _client()
    if not signup.origin_allowed(client.origin, client.fetch_site, state.own_origins):
        return _error_page(Forbidden())
    session = db_session(write=True)
    if request.form.get("action") == "unsubscribe":
        subscribers.unsubscribe(session, data)
        session.commit()
        return _page("unsubscribed.html")
    try:
        subscriber = subscribers.update_preferences(
            session, data, name=request.form.get("name", ""),
            sections=request.form.getlist("sections"), known_sections=settings.sections,
            name_max=FORM_NAME_MAX,
        )
    except NotFoundError:
        return _page("link_error.html", 400, title="This link no longer works",
                     message="This address is not subscribed any more.")
    except InputError as exc:
        current = subscribers.by_token(session, data)
        if current is None:  # pragma: no cover - deleted in between
            return _page("link_error.html", 400, title="This link no longer works",
                         message="This address is not on the list any more.")
        return _page("preferences.html", 400, subscriber=current, sections=settings.sections,
                     subscribed=True, saved=False, error=str(exc))
    session.commit()
    return _page("preferences.html", subscriber=subscriber, sections=settings.sections,
                 subscribed=True, saved=True, error="")


# --------------------------------------------------------------------------- archive


def _render_issue(state: WebState, label: str) -> str | None:
    """The web version of a sent issue, rendered once and cached (a sent issue is frozen)."""
    with state.archive_lock:
        cached = state.archive.get(label)
        if cached is not None:
            state.archive.move_to_end(label)
            return cached
    from digest.issues import content_of
    from digest.personalise import Recipient
    from digest.render import Renderer, personalise

    session = db_session()
    issue = web_store.sent_issue(session, label)
    if issue is None:
        return None
    content = content_of(session, issue)
    settings = state.settings
    base = settings.base_url.rstrip("/")
    # A neutral reader: no personal data, and the personal links lead to the sign-up page.
    reader = Recipient(
        email="your address", name="reader", unsubscribe_url=f"{base}/subscribe",
        preferences_url=f"{base}/subscribe", view_url=f"{base}/archive/{issue.label}",
    )
    try:
        html, _ = personalise(Renderer(settings).compile(content), reader)
    except Exception as exc:  # a render bug must not take the archive down
        log.warning("archive render failed for %s: %s", label, exc)
        html = render_template("pages/archive_issue.html", issue=issue, content=content)
    with state.archive_lock:
        state.archive[label] = html
        while len(state.archive) > ARCHIVE_CACHE:
            state.archive.popitem(last=False)
    return html


def archive_index() -> Response:
    """GET /archive: the sent issues, newest first."""
    issues = web_store.sent_issues(db_session())
    response = _page("archive.html", issues=issues)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


def archive_issue(label: str) -> Response:
    """GET /archive/LABEL: an issue's web version (the "view in browser" link)."""
    html = _render_issue(_state(), label)
    if html is None:
        return _error_page(NotFound())
    response = Response(html, mimetype="text/html")
    response.headers["Cache-Control"] = "public, max-age=300"
    # The issue shows article images from the publication's servers and inline styles.
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; "
        "font-src https:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    )
    return response


# --------------------------------------------------------------------------- webhooks


class _WebhookRejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _verified_payload() -> Any:
    settings = _state().settings
    if not settings.webhook_secrets:
        raise _WebhookRejected(404, "webhooks are not configured")
    body = request.get_data(cache=True)
    try:
        tokens.check_webhook_signature(
            settings.webhook_secrets, request.headers.get(tokens.WEBHOOK_HEADER, ""), body,
            time.time(), path=request.path,
        )
    except tokens.TokenError as exc:
        raise _WebhookRejected(401, str(exc)) from None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _WebhookRejected(400, "the body is not JSON") from None


def _event_id(payload: Mapping[str, Any]) -> str:
    value = payload.get("id")
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise _WebhookRejected(400, "every event needs an id")
    text = str(value).strip()
    if len(text) > 150:
        raise _WebhookRejected(400, "event id longer than 150 characters")
    return text


def webhook_subscribe() -> Response:
    """POST /webhooks/subscribe: a signed sign-up from another system (still double opt-in)."""
    state = _state()
    try:
        payload = _verified_payload()
        if not isinstance(payload, dict):
            raise _WebhookRejected(400, "send one JSON object")
        event_id = _event_id(payload)
        address = subscribers.normalise(_as_text(payload.get("email")))
        name = subscribers.clean_name(_as_text(payload.get("name")), FORM_NAME_MAX)
        raw_sections = payload.get("sections") or []
        if not isinstance(raw_sections, list):
            raise _WebhookRejected(400, "sections must be a list of section names")
        sections = subscribers.resolve_sections(
            [_as_text(s) for s in raw_sections], state.settings.sections
        )
    except _WebhookRejected as exc:
        return _json({"error": str(exc)}, exc.status)
    except InputError as exc:
        return _json({"error": str(exc)}, 400)
    session = db_session(write=True)
    now = utcnow()
    web_store.prune_events(session, now - EVENT_RETENTION)
    if not web_store.record_event(session, f"subscribe:{event_id}", now):
        session.commit()
        return _json({"status": "duplicate"}, 200)
    subscriber = subscribers.request_subscription(
        session, address, name=name, sections=sections, source="webhook", now=now
    )
    session.commit()
    if subscriber is not None:
        state.mailer.submit_for(subscriber)
    return _json({"status": "accepted"}, 202)


def webhook_events() -> Response:
    """POST /webhooks/events: signed bounce/complaint/unsubscribe events (anymail names)."""
    try:
        payload = _verified_payload()
        events = payload if isinstance(payload, list) else [payload]
        if not events or len(events) > MAX_EVENTS or not all(isinstance(e, dict) for e in events):
            raise _WebhookRejected(400, f"send an event object or a list of 1-{MAX_EVENTS}")
        ids = [_event_id(e) for e in events]
        for e in events:
            if not isinstance(e.get("type"), str) or not isinstance(e.get("email"), str):
                raise _WebhookRejected(400, "every event needs a type and an email")
    except _WebhookRejected as exc:
        return _json({"error": str(exc)}, exc.status)
    session = db_session(write=True)
    now = utcnow()
    web_store.prune_events(session, now - EVENT_RETENTION)
    counts = {"suppressed": 0, "unsubscribed": 0, "ignored": 0, "duplicate": 0, "invalid": 0}
    for event_id, event in zip(ids, events, strict=True):
        if not web_store.record_event(session, f"events:{event_id}", now):
            counts["duplicate"] += 1
            continue
        try:
            outcome = subscribers.apply_event(session, event["type"], event["email"], now)
        except InputError:
            outcome = "invalid"
        counts[outcome] += 1
    session.commit()
    _event("webhook_events", **counts)
    return _json({"status": "ok", **counts}, 200)


# --------------------------------------------------------------------------- misc routes


def healthz() -> Response:
    """GET /healthz: the app answers and the database does too."""
    try:
        web_store.ping(db_session())
    except Exception as exc:  # any database failure means "not healthy"
        log.warning("health check failed: %s", exc)
        return _json({"status": "error", "database": "unavailable"}, 503)
    return _json({"status": "ok", "database": "ok"})


def _routes(app: Flask) -> None:
    def index() -> Response:
        return redirect(url_for("subscribe_get"), 302)  # type: ignore[return-value]

    def subscribe_get() -> Response:
        return _subscribe_form()

    def thanks() -> Response:
        return _page("thanks.html")

    add = app.add_url_rule
    add("/", "index", index)
    add("/healthz", "healthz", healthz)
    # OPTIONS on /subscribe is the CORS preflight below, not Flask's automatic answer.
    add("/subscribe", "subscribe_get", subscribe_get, methods=["GET"],
        provide_automatic_options=False)
    add("/subscribe", "subscribe_post", subscribe_post, methods=["POST"],
        provide_automatic_options=False)
    add("/subscribe", "subscribe_preflight", subscribe_preflight, methods=["OPTIONS"],
        provide_automatic_options=False)
    add("/subscribe/thanks", "thanks", thanks)
    add("/subscribe/token", "subscribe_token", subscribe_token)
    add("/confirm/<token>", "confirm", confirm_view, methods=["GET", "POST"])
    add("/u/<token>", "unsubscribe", unsubscribe_view, methods=["GET", "POST"])
    add("/preferences/<token>", "preferences", preferences_view, methods=["GET", "POST"])
    add("/archive", "archive", archive_index)
    add("/archive/<label>", "archive_issue", archive_issue)
    add("/webhooks/subscribe", "webhook_subscribe", webhook_subscribe, methods=["POST"])
    add("/webhooks/events", "webhook_events", webhook_events, methods=["POST"])



def render_form_snippet(settings: Settings, *, next_url: str = "") -> str:
    """The HTML sign-up form a publication pastes into its own pages (``digest form``)."""
    if next_url and (_UNSAFE_URL_CHARS.search(next_url)
                     or origin_of(next_url) not in allowed_origins(settings)):
        raise InputError(
            f"--next {next_url!r} is not on an allowed origin; add "
            f"{origin_of(next_url) or 'its origin'} to allowed_origins first"
        )
    env = jinja2.Environment(
        loader=template_loader(settings.templates_dir), autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    base = settings.base_url.rstrip("/")
    return env.get_template("pages/form_snippet.html").render(
        action=f"{base}/subscribe", token_url=f"{base}/subscribe/token", next=next_url,
        sections=settings.sections, name_max=FORM_NAME_MAX, honeypot_field=HONEYPOT_FIELD,
        token_field=TOKEN_FIELD, newsletter_name=settings.newsletter_name,
        timezone_field=TIMEZONE_FIELD,
    )
