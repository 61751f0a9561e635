"""The double opt-in email: built with the stdlib EmailMessage, sent after the database commit.

The reader's name is left out of this email on purpose. The sign-up form is public and the
message goes to an address that has not consented yet, so any text from the form that we
echoed would let anyone send their words to anyone from our domain.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from functools import lru_cache
from typing import Protocol

import jinja2

from digest.config import Settings
from digest.errors import DigestError
from digest.mail.base import BaseBackend, Outcome, OutgoingMessage
from digest.models import utcnow
from digest.render import default_templates_dir
from digest.subscribers import normalise
from digest.tokens import confirm_url
from digest.verp import envelope_sender

log = logging.getLogger("digest.confirmation")

TEXT_TEMPLATE = "confirm.txt.j2"
HTML_TEMPLATE = "confirm.html.j2"

BackendFactory = Callable[[Settings], AbstractContextManager[BaseBackend]]


class Confirmable(Protocol):
    """A subscriber as the confirmation email needs it."""

    @property
    def id(self) -> int: ...

    @property
    def email(self) -> str: ...

    @property
    def email_key(self) -> str: ...


def template_loader(templates_dir: str = "") -> jinja2.BaseLoader:
    """The publication's templates_dir first, then the shipped templates."""
    roots = [templates_dir] if templates_dir else []
    roots.append(str(default_templates_dir()))
    return jinja2.FileSystemLoader(roots)


@lru_cache(maxsize=8)
def _environment(templates_dir: str) -> jinja2.Environment:
    # One environment per template folder: Jinja caches compiled templates in it.
    return jinja2.Environment(
        loader=template_loader(templates_dir),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "html.j2"), disabled_extensions=("txt.j2",)
        ),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def build_confirmation(
    settings: Settings, subscriber: Confirmable, *, now: datetime | None = None
) -> OutgoingMessage:
    """The confirmation message for one pending subscriber, ready for a mail backend."""
    now = now or utcnow()
    env = _environment(settings.templates_dir)
    values = {
        "newsletter_name": settings.newsletter_name,
        "confirm_url": confirm_url(settings, subscriber),
        "valid_days": max(1, settings.confirm_max_age // 86400),
        "base_url": settings.base_url.rstrip("/"),
        "postal_address": settings.postal_address,
        "language": settings.language,
    }
    text = env.get_template(TEXT_TEMPLATE).render(values)
    html = env.get_template(HTML_TEMPLATE).render(values)

    address = normalise(subscriber.email, lookup=True)
    recipient = address.ascii or address.email
    domain = settings.from_email.rpartition("@")[2] or "localhost"
    message = EmailMessage()
    message["From"] = formataddr((settings.from_name, settings.from_email))
    message["To"] = recipient
    message["Subject"] = f"Confirm your subscription to {settings.newsletter_name}"
    message["Date"] = format_datetime(now)
    message_id = make_msgid(domain=domain)
    message["Message-ID"] = message_id
    # RFC 3834 §5: an automatic message; out-of-office responders should not answer it.
    message["Auto-Submitted"] = "auto-generated"
    if settings.reply_to:
        message["Reply-To"] = settings.reply_to
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    # An internationalised local part needs SMTPUTF8 (RFC 6531); everything else stays 7-bit.
    mail_policy = policy.SMTP if address.ascii else policy.SMTPUTF8
    return OutgoingMessage(
        message_id=message_id.strip("<>"),
        sender=envelope_sender(settings),
        recipient=recipient,
        data=message.as_bytes(policy=mail_policy),
    )


def _default_factory(settings: Settings) -> AbstractContextManager[BaseBackend]:
    from digest.mail import get_backend

    return get_backend(settings)


def _log(event: str, **fields: object) -> None:
    log.info(json.dumps({"event": event, **fields}, default=str))


def send(
    settings: Settings, message: OutgoingMessage, factory: BackendFactory | None = None
) -> bool:
    """Hand one confirmation to the configured backend; log and return False on failure."""
    try:
        with (factory or _default_factory)(settings) as backend:
            result = backend.send_messages([message])[0]
    except (DigestError, OSError) as exc:
        _log("confirmation_failed", message_id=message.message_id, error=str(exc))
        return False
    if result.outcome is not Outcome.SENT:
        _log("confirmation_failed", message_id=message.message_id, code=result.code,
             error=result.text)
        return False
    _log("confirmation_sent", message_id=message.message_id)
    return True


@dataclass(frozen=True, slots=True)
class _Job:
    id: int
    email: str
    email_key: str


#: The longest a submitted piece of work is held back.
MAX_DELAY = 5.0

#: Work for the mailer's thread: it returns the subscribers to send a confirmation to.
Work = Callable[[], Sequence[Confirmable]]


@dataclass(frozen=True, slots=True)
class _Work:
    not_before: float  # time.monotonic()
    work: Work


class ConfirmationMailer:
    """Records sign-ups and sends their confirmation emails on one background thread.

    The sign-up response must not take longer for a new address (a row and an email) than
    for a known one (nothing to do), or its timing would reveal who is on the list. The
    queue is bounded; when it is full the email is dropped and logged, and the address can
    ask again after the 24-hour cap.
    """

    def __init__(
        self,
        settings: Settings,
        factory: BackendFactory | None = None,
        *,
        background: bool = True,
        max_queue: int = 1000,
    ) -> None:
        self.settings = settings
        self.factory = factory
        self.background = background
        self._queue: queue.Queue[_Work | None] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closing = threading.Event()

    def submit_for(self, subscriber: Confirmable) -> None:
        """Build and send the confirmation for subscriber soon (or now, without a thread).

        Only plain values are queued, and the message is built on the mailer's thread, so
        the request that asked for it takes no longer than one that did not.
        """
        job = _Job(subscriber.id, subscriber.email, subscriber.email_key)
        self.submit(lambda: [job])

    def submit(self, work: Work, *, delay: float = 0.0) -> None:
        """Run work on the mailer's thread, then confirm each subscriber it returns.

        The web app records a sign-up this way, after the response, so that whether the
        address is new (a row to write, an email to send) does not show in the response time.
        delay holds the work back that many seconds at least. When the queue is full the work
        runs at once and only the email is dropped: a sign-up is never lost, the reader can
        ask again after the 24-hour cap.
        """
        if not self.background:
            self._handle(work)
            return
        self._start()
        try:
            self._queue.put_nowait(_Work(time.monotonic() + delay, work))
        except queue.Full:
            for subscriber in work():
                _log("confirmation_dropped", subscriber_id=subscriber.id, reason="queue full")

    def _handle(self, work: Work) -> None:
        for subscriber in work():
            try:
                message = build_confirmation(self.settings, subscriber)
            except DigestError as exc:
                _log("confirmation_failed", subscriber_id=subscriber.id, error=str(exc))
                continue
            send(self.settings, message, self.factory)

    def join(self, timeout: float = 10.0) -> bool:
        """Wait until every submitted email was handed over; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued and stop the thread."""
        self._closing.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="digest-confirmations", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                wait = item.not_before - time.monotonic()
                if wait > 0 and not self._closing.is_set():  # at shutdown, drain at once
                    self._closing.wait(min(wait, MAX_DELAY))
                self._handle(item.work)
            except Exception as exc:  # keep the thread alive whatever a backend does
                _log("confirmation_failed", error=f"{type(exc).__name__}: {exc}")
            finally:
                self._queue.task_done()
