"""SMTP backend: a pool of reused connections, all driven by one thread without blocking.

Why one thread: a send is CPU-bound in Python, and threads under the GIL only take turns at
the CPU. The pool instead multiplexes its connections through a selector (digest.mail.pipeline
does the protocol, pipelined when the server offers it), so while one connection waits for
its round trip the others write; more cores are used by more processes (``--workers``).

Retry policy, decided here so that callers can rely on it:

* A reply classifies the message (Outcome.from_smtp_code): 2xx SENT, 5xx REJECTED, or
  BOUNCED when it says the address does not exist, 4xx DEFERRED; 552 at RCPT
  (RFC 5321 §4.5.3.1.10) is DEFERRED too. The code and text are in the :class:`SendResult`.
* 530 "authentication required" while no username is set is a configuration error: the
  batch stops and send_messages raises BackendConfigError (nothing is retried or given up).
* If the connection closes (a 421 reply, a reset, a timeout) before the end of DATA was sent,
  the server cannot have taken the message, so it is tried once more on a new connection
  within the batch.
* If the connection is lost after the end of DATA was sent but before the reply arrived, the
  message may have been delivered. It is reported DEFERRED and not retried here: the caller
  retries it later with the same Message-ID, so a duplicate can be recognised.
* If a new connection cannot be opened, or is lost before it carried one message, the server
  is treated as down: the rest of the batch is reported DEFERRED without being tried.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import selectors
import smtplib
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from digest.mail.base import BackendConfigError, BaseBackend, Outcome, OutgoingMessage, SendResult
from digest.mail.pipeline import Flight, LostConnection, Wire

if TYPE_CHECKING:
    from digest.config import Settings

log = logging.getLogger(__name__)

SECURITY_MODES = ("none", "starttls", "ssl")
_QUIT_TIMEOUT = 5.0


@functools.cache
def default_local_hostname() -> str:
    """This machine's fully qualified name for EHLO, looked up once per process."""
    # smtplib would call socket.getfqdn() for every connection; the lookup can take
    # seconds on a badly configured resolver (Django caches it for the same reason).
    return socket.getfqdn() or "localhost"


class _Client(smtplib.SMTP):
    """smtplib.SMTP; only connecting, EHLO, STARTTLS and AUTH go through it."""


class _SSLClient(_Client, smtplib.SMTP_SSL):
    """The same, over implicit TLS (port 465)."""


@dataclass(eq=False)
class _Slot:
    """One place in the pool: a connection, or None until one is (re)opened."""

    wire: Wire | None = None
    lost: bool = False  # it had a connection that was lost, so the next one is a reconnect
    replacement: bool = False  # reconnected, and has not yet carried a message
    given_up: bool = False  # could not connect during this batch; the others carry on


class _Batch:
    """The messages of one send_messages call and what became of each."""

    def __init__(self, messages: Sequence[OutgoingMessage]) -> None:
        self.messages = messages
        self.results: list[SendResult | None] = [None] * len(messages)
        self.tries = [0] * len(messages)
        self.retry: deque[int] = deque()
        self._next = 0
        self.stopped = ""  # why the rest of the batch is not tried (server down)
        self.last_error = ""
        self.config_error = ""

    def take(self) -> Flight | None:
        """The next message to send (retries first), or None when done or stopped."""
        if self.stopped:
            return None
        if self.retry:
            index = self.retry.popleft()
        elif self._next < len(self.messages):
            index = self._next
            self._next += 1
        else:
            return None
        self.tries[index] += 1
        return Flight(index, self.messages[index])

    @property
    def waiting(self) -> bool:
        """True while some message has not been handed to a connection."""
        return not self.stopped and (bool(self.retry) or self._next < len(self.messages))

    def stop(self, reason: str) -> None:
        """Stop handing out messages; the untried rest will be DEFERRED with ``reason``."""
        self.stopped = self.stopped or reason

    def finish(self) -> list[SendResult]:
        """All results, in order: messages never tried are DEFERRED."""
        reason = self.stopped or self.last_error or "no connection was available"
        return [
            result
            or SendResult.for_message(message, Outcome.DEFERRED, text=f"not tried: {reason}")
            for message, result in zip(self.messages, self.results, strict=True)
        ]


class SMTPBackend(BaseBackend):
    """Send through an SMTP server over a pool of ``connections`` reused connections."""

    name = "smtp"

    def __init__(
        self,
        *,
        host: str = "localhost",
        port: int = 587,
        username: str = "",
        password: str = "",
        security: str = "starttls",
        connections: int = 2,
        timeout: float = 30.0,
        connect_timeout: float | None = None,
        local_hostname: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        verify: bool = True,
    ) -> None:
        """``connect_timeout`` bounds connecting, TLS and AUTH (default: timeout, at most 10 s).

        ``ssl_context`` replaces the default verifying context; ``verify=False`` turns off
        certificate checks on the default context (for test servers only).
        """
        super().__init__()
        if security not in SECURITY_MODES:
            raise BackendConfigError(
                f"smtp security {security!r} must be one of {', '.join(SECURITY_MODES)}"
                " — check DIGEST_SMTP_SECURITY"
            )
        if connections < 1:
            raise BackendConfigError("smtp connections must be at least 1")
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.security = security
        self.connections = connections
        self.timeout = timeout
        self.connect_timeout = min(timeout, 10.0) if connect_timeout is None else connect_timeout
        self.local_hostname = local_hostname
        self.ssl_context = ssl_context
        self.verify = verify
        # One batch at a time drives the pool; a second caller waits for the first.
        self._lock = threading.RLock()
        self._slots: list[_Slot] | None = None
        # The pool's connections stay registered here from connect to close, with the
        # events each one waits for.
        self._selector: selectors.BaseSelector | None = None
        self._events: dict[Wire, int] = {}

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Self:
        """Build the backend from the ``smtp_*`` settings."""
        options: dict[str, Any] = {
            "host": settings.smtp_host,
            "port": settings.smtp_port,
            "username": settings.smtp_username,
            "password": settings.smtp_password,
            "security": settings.smtp_security,
            "connections": settings.smtp_connections,
            "timeout": settings.smtp_timeout,
        }
        options.update(overrides)
        return cls(**options)

    @property
    def address(self) -> str:
        """``host:port``, for messages."""
        return f"{self.host}:{self.port}"

    # -- opening and closing ------------------------------------------------------------------

    def open(self) -> None:
        """Open the first connection now, to report a wrong host, port or password at once."""
        with self._lock:
            if self._slots is not None:
                return
            self._selector = selectors.DefaultSelector()
            first = _Slot()
            try:
                self._attach(first, self._wire())
            except BaseException:
                self._selector.close()
                self._selector = None
                raise
            self._slots = [first] + [_Slot() for _ in range(self.connections - 1)]

    def close(self) -> None:
        """Send QUIT on every pooled connection and close it. Safe to call more than once."""
        with self._lock:
            slots, self._slots = self._slots, None
            for slot in slots or ():
                wire = slot.wire
                if wire is not None:
                    self._detach(slot)
                    wire.quit(_QUIT_TIMEOUT)
            if self._selector is not None:
                self._selector.close()
                self._selector = None

    def _attach(self, slot: _Slot, wire: Wire) -> None:
        assert self._selector is not None
        self._selector.register(wire.sock, selectors.EVENT_READ, slot)
        self._events[wire] = selectors.EVENT_READ
        slot.wire = wire

    def _detach(self, slot: _Slot) -> None:
        """Forget the slot's connection; before it is closed, which the selector must not see."""
        wire, slot.wire = slot.wire, None
        if wire is not None and self._events.pop(wire, None) is not None:
            assert self._selector is not None
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(wire.sock)

    def _ssl_context(self) -> ssl.SSLContext:
        if self.ssl_context is not None:
            return self.ssl_context
        context = ssl.create_default_context()
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _connect(self) -> _Client:
        """Connect, greet, secure and log in; raise BackendConfigError saying what to check."""
        hostname = self.local_hostname or default_local_hostname()
        try:
            # Connecting in the constructor also sets the name TLS verifies the server by;
            # on failure the constructor closes its own socket.
            if self.security == "ssl":
                client: _Client = _SSLClient(
                    self.host, self.port, hostname, timeout=self.connect_timeout,
                    context=self._ssl_context(),
                )
            else:
                client = _Client(self.host, self.port, hostname, timeout=self.connect_timeout)
        except (smtplib.SMTPException, OSError) as exc:
            raise BackendConfigError(self._explain(exc)) from exc
        try:
            client.ehlo()
            if self.security == "starttls":
                client.starttls(context=self._ssl_context())
                client.ehlo()
            if self.username:
                client.login(self.username, self.password)
        except (smtplib.SMTPException, OSError) as exc:
            client.close()
            raise BackendConfigError(self._explain(exc)) from exc
        except BaseException:
            client.close()
            raise
        if client.sock is not None:
            client.sock.settimeout(self.timeout)
        client.timeout = self.timeout
        return client

    def _explain(self, exc: BaseException) -> str:
        """A message for a failed connection attempt that says what to check."""
        where = self.address
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return (
                f"authentication failed for user {self.username!r} at {where}: "
                f"{_reply_text(exc)} — check DIGEST_SMTP_USERNAME/DIGEST_SMTP_PASSWORD"
            )
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            if "STARTTLS" in str(exc):
                return (
                    f"{where} does not offer STARTTLS — check DIGEST_SMTP_SECURITY "
                    "(ssl for port 465; none only on a trusted network)"
                )
            return (
                f"{where} does not offer AUTH on this connection — check DIGEST_SMTP_SECURITY "
                "(many servers offer AUTH only after STARTTLS) and DIGEST_SMTP_USERNAME"
            )
        if isinstance(exc, smtplib.SMTPConnectError):
            return (
                f"{where} refused the session: {_reply_text(exc)}"
                " — check DIGEST_SMTP_HOST/DIGEST_SMTP_PORT"
            )
        if isinstance(exc, ssl.SSLCertVerificationError):
            return (
                f"the TLS certificate of {where} could not be verified: "
                f"{exc.verify_message or exc} — check DIGEST_SMTP_HOST matches the certificate"
            )
        if isinstance(exc, ssl.SSLError):
            return (
                f"TLS with {where} failed: {exc.reason or exc} — check DIGEST_SMTP_SECURITY "
                "(ssl for port 465, starttls for port 587)"
            )
        if isinstance(exc, socket.gaierror):
            return (
                f"could not find smtp host {self.host!r}: {exc.strerror}"
                " — check DIGEST_SMTP_HOST"
            )
        if isinstance(exc, TimeoutError | smtplib.SMTPServerDisconnected):
            # smtplib turns a read timeout into SMTPServerDisconnected; the cause is kept.
            timed_out = isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError)
            detail = f"timed out after {self.connect_timeout:g} s" if timed_out else "it hung up"
            return (
                f"could not connect to {where}: {detail} — check DIGEST_SMTP_HOST/DIGEST_SMTP_PORT"
                " and DIGEST_SMTP_SECURITY (ssl for port 465, starttls for port 587)"
            )
        if isinstance(exc, OSError):
            return (
                f"could not connect to {where}: {exc.strerror or exc}"
                " — check DIGEST_SMTP_HOST/DIGEST_SMTP_PORT"
            )
        if isinstance(exc, smtplib.SMTPResponseException):
            return f"{where} refused: {_reply_text(exc)}"
        return f"{where}: {exc}"

    def _wire(self) -> Wire:
        """A new connection, ready for messages; BackendConfigError if it cannot be had."""
        client = self._connect()
        try:
            return Wire(client, self.address, self.timeout)
        except LostConnection as exc:
            client.close()
            raise BackendConfigError(f"could not connect to {self.address}: {exc}") from exc

    # -- sending ------------------------------------------------------------------------------

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send over the pool; return one result per message, in order.

        Opens and closes the pool itself if it was not open. Raises BackendConfigError if it
        was not open and cannot be, and when the server demands AUTH that is not configured;
        otherwise an unreachable server makes results DEFERRED instead.
        """
        if not messages:
            return []
        with self._lock:
            opened_here = self._slots is None
            if opened_here:
                self.open()
            try:
                assert self._slots is not None
                batch = _Batch(messages)
                self._pump(batch, self._slots[: min(self.connections, len(messages))])
                if batch.config_error:
                    raise BackendConfigError(batch.config_error)
                return batch.finish()
            finally:
                if opened_here:
                    self.close()

    def _pump(self, batch: _Batch, slots: list[_Slot]) -> None:
        """Drive every connection until each message has a result or the batch stopped."""
        selector = self._selector
        assert selector is not None
        events = self._events
        while True:
            deadline = float("inf")
            for slot in slots:
                self._feed(slot, batch)
                wire = slot.wire
                if wire is None:
                    continue
                try:
                    wire.flush()
                except LostConnection as exc:
                    self._lose(slot, batch, str(exc))
                    continue
                wanted = _READ_WRITE if wire.wants_write else selectors.EVENT_READ
                if events[wire] != wanted:
                    selector.modify(wire.sock, wanted, slot)
                    events[wire] = wanted
                due = wire.deadline()
                if due is not None and due < deadline:
                    deadline = due
            if deadline == float("inf"):
                return  # nothing in flight: every message has a result or cannot have one
            for key, mask in selector.select(max(0.0, deadline - time.monotonic())):
                self._event(key.data, batch, mask)
            now = time.monotonic()
            for slot in slots:
                due = slot.wire.deadline() if slot.wire else None
                if due is not None and now >= due:
                    self._lose(slot, batch, "timed out")

    def _event(self, slot: _Slot, batch: _Batch, mask: int) -> None:
        """The slot's socket is writable or readable: move its messages on."""
        wire = slot.wire
        if wire is None:
            return
        try:
            if mask & selectors.EVENT_WRITE:
                wire.flush()
            if mask & selectors.EVENT_READ:
                self._settle(slot, batch, wire.read())
        except LostConnection as exc:
            self._settle(slot, batch, exc.finished)
            self._lose(slot, batch, str(exc))
            return
        if wire.closing is not None:
            code, text, _ = wire.closing
            self._lose(slot, batch, f"{code} {text}")

    def _feed(self, slot: _Slot, batch: _Batch) -> None:
        """Give the slot its next message if it can take one, connecting it first if need be."""
        if slot.given_up or not batch.waiting:
            return
        if slot.wire is None:
            try:
                self._attach(slot, self._wire())
            except BackendConfigError as exc:
                if slot.lost:
                    log.warning("smtp: cannot reconnect, server looks down: %s", exc)
                    batch.stop(str(exc))
                else:
                    batch.last_error = str(exc)  # the other connections carry on
                    slot.given_up = True
                return
            slot.replacement = slot.lost
        wire = slot.wire
        if wire is None:
            return
        while wire.ready and (flight := batch.take()) is not None:
            done = wire.start(flight)
            if done is None:
                break  # queued: its DATA reply decides when the next one may follow
            self._settle(slot, batch, [done])

    def _settle(self, slot: _Slot, batch: _Batch, finished: list[Flight]) -> None:
        """Record the results of finished flights."""
        for flight in finished:
            result = flight.result
            assert result is not None
            batch.results[flight.index] = result
            slot.replacement = False
            if result.code == 530 and not self.username and not batch.config_error:
                batch.config_error = (
                    f"{self.address} requires authentication ({result.code} {result.text}) "
                    "but no credentials are set — set DIGEST_SMTP_USERNAME and "
                    "DIGEST_SMTP_PASSWORD (and DIGEST_SMTP_SECURITY=starttls or ssl)"
                )
                batch.stop(batch.config_error)

    def _lose(self, slot: _Slot, batch: _Batch, reason: str) -> None:
        """The slot's connection is gone: settle its messages, retrying those it safely can."""
        wire = slot.wire
        if wire is None:
            return
        self._detach(slot)
        slot.lost = True
        log.info("smtp: connection to %s lost (%s)", self.address, reason)
        for flight, retry in wire.abandon(reason):
            assert flight.result is not None
            batch.results[flight.index] = flight.result
            if not retry:
                continue
            if slot.replacement:
                batch.stop(f"{self.address} dropped a new connection: {reason}")
            elif batch.tries[flight.index] < 2:
                batch.retry.append(flight.index)


_READ_WRITE = selectors.EVENT_READ | selectors.EVENT_WRITE


def _decode(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def _reply_text(exc: smtplib.SMTPResponseException) -> str:
    return f"{exc.smtp_code} {_decode(exc.smtp_error)}"
