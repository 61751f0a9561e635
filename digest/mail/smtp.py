"""SMTP backend: a pool of reused connections, messages spread over it by threads.

Retry policy, decided here so that callers can rely on it:

* A reply classifies the message: 2xx SENT, 5xx PERMANENT, 4xx TEMPORARY; 552 at RCPT
  (RFC 5321 §4.5.3.1.10) and 530 "authentication required" are TEMPORARY too. The code and
  text are in the :class:`SendResult`.
* If the connection closes (a 421 reply, a reset, a timeout) before the end of DATA was sent,
  the server cannot have taken the message, so it is tried once more on a new connection
  within the batch.
* If the connection is lost after the end of DATA was sent but before the reply arrived, the
  message may have been delivered. It is reported TEMPORARY and not retried here: the caller
  retries it later with the same Message-ID, so a duplicate can be recognised.
* If a new connection cannot be opened, or is lost before it carried one message, the server
  is treated as down: the rest of the batch is reported TEMPORARY without being tried.
"""

from __future__ import annotations

import functools
import logging
import queue
import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from digest.mail.base import BackendConfigError, BaseBackend, Outcome, OutgoingMessage, SendResult

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

    from digest.config import Settings

log = logging.getLogger(__name__)

SECURITY_MODES = ("none", "starttls", "ssl")
_DOT_AT_LINE_START = re.compile(rb"^\.", re.MULTILINE)
_QUIT_TIMEOUT = 5.0


@functools.cache
def default_local_hostname() -> str:
    """This machine's fully qualified name for EHLO, looked up once per process."""
    # smtplib would call socket.getfqdn() for every connection; the lookup can take
    # seconds on a badly configured resolver (Django caches it for the same reason).
    return socket.getfqdn() or "localhost"


class _Client(smtplib.SMTP):
    """smtplib.SMTP that records whether the end of DATA went out, and the last DATA reply."""

    payload_sent = False
    data_reply: tuple[int, bytes] = (0, b"")

    def data(self, msg: ReadableBuffer | str) -> tuple[int, bytes]:
        """Send DATA like smtplib does, noting the moment the final dot has been sent."""
        self.payload_sent = False
        self.putcmd("data")
        code, reply = self.getreply()
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        payload = msg.encode("ascii") if isinstance(msg, str) else bytes(msg)
        # RFC 5321 §4.5.2: a line that starts with a dot gets one more.
        payload = _DOT_AT_LINE_START.sub(b"..", payload)
        if not payload.endswith(b"\r\n"):
            payload += b"\r\n"
        self.send(payload + b".\r\n")
        self.payload_sent = True
        self.data_reply = self.getreply()
        return self.data_reply


class _SSLClient(_Client, smtplib.SMTP_SSL):
    """The same, over implicit TLS (port 465)."""


@dataclass
class _Slot:
    """One place in the pool: a connection, or None until one is (re)opened."""

    client: _Client | None = None
    lost: bool = False  # it had a connection that was lost, so the next one is a reconnect
    replacement: bool = False  # reconnected, and has not yet carried a message


class _Batch:
    """The messages of one send_messages call, handed out to the workers one at a time."""

    def __init__(self, messages: Sequence[OutgoingMessage]) -> None:
        self.messages = messages
        self.results: list[SendResult | None] = [None] * len(messages)
        self._next = 0
        self._lock = threading.Lock()
        self.stopped = ""  # why the rest of the batch is not tried (server down)
        self.last_error = ""

    def claim(self) -> int | None:
        """The index of the next message to send, or None when done or stopped."""
        with self._lock:
            if self.stopped or self._next >= len(self.messages):
                return None
            self._next += 1
            return self._next - 1

    def stop(self, reason: str) -> None:
        """Stop handing out messages; the unsent rest will be TEMPORARY with ``reason``."""
        with self._lock:
            self.stopped = self.stopped or reason

    def finish(self) -> list[SendResult]:
        """All results, in order: messages never tried are TEMPORARY."""
        reason = self.stopped or self.last_error or "no connection was available"
        return [
            result
            or SendResult.for_message(message, Outcome.TEMPORARY, text=f"not tried: {reason}")
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
        self._lock = threading.Lock()
        self._slots: list[_Slot] | None = None
        self._idle: queue.Queue[_Slot] = queue.Queue()
        self._executor: ThreadPoolExecutor | None = None

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
            first = _Slot(client=self._connect())
            self._slots = [first] + [_Slot() for _ in range(self.connections - 1)]
            self._idle = queue.Queue()
            for slot in self._slots:
                self._idle.put(slot)
            if self.connections > 1:
                self._executor = ThreadPoolExecutor(self.connections, "digest-smtp")

    def close(self) -> None:
        """Send QUIT on every pooled connection and close it. Safe to call more than once."""
        with self._lock:
            slots, self._slots = self._slots, None
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        for slot in slots or ():
            if slot.client is not None:
                _quit(slot.client)
                slot.client = None

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

    # -- sending ------------------------------------------------------------------------------

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send over the pool; return one result per message, in order.

        Opens and closes the pool itself if it was not open. Raises BackendConfigError only
        in that case; once open, an unreachable server makes results TEMPORARY instead.
        """
        if not messages:
            return []
        opened_here = self._slots is None
        if opened_here:
            self.open()
        try:
            batch = _Batch(messages)
            workers = min(self.connections, len(messages))
            executor = self._executor
            if workers == 1 or executor is None:
                self._work(batch)
            else:
                futures = [executor.submit(self._work, batch) for _ in range(workers)]
                wait(futures)
                for future in futures:
                    future.result()  # a bug in a worker is raised here, not swallowed
            return batch.finish()
        finally:
            if opened_here:
                self.close()

    def _work(self, batch: _Batch) -> None:
        """Take one pooled connection and send messages from the batch until none are left."""
        slot = self._idle.get()
        try:
            while True:
                if slot.client is None:
                    try:
                        slot.client = self._connect()
                    except BackendConfigError as exc:
                        if slot.lost:
                            log.warning("smtp: cannot reconnect, server looks down: %s", exc)
                            batch.stop(str(exc))
                        else:
                            batch.last_error = str(exc)  # other workers carry on
                        return
                    slot.replacement = slot.lost
                index = batch.claim()
                if index is None:
                    return
                batch.results[index] = self._deliver(slot, batch.messages[index], batch)
        finally:
            self._idle.put(slot)

    def _deliver(self, slot: _Slot, message: OutgoingMessage, batch: _Batch) -> SendResult:
        """Send one message, retrying once on a new connection when that cannot duplicate it."""
        result, retry = self._transaction(slot, message, batch)
        if not retry:
            return result
        log.info("smtp: connection to %s lost (%s); reconnecting", self.address, result.text)
        try:
            slot.client = self._connect()
        except BackendConfigError as exc:
            batch.stop(str(exc))
            return result
        slot.replacement = True
        result, _ = self._transaction(slot, message, batch)
        return result

    def _transaction(
        self, slot: _Slot, message: OutgoingMessage, batch: _Batch
    ) -> tuple[SendResult, bool]:
        """One MAIL/RCPT/DATA exchange: the result, and whether retrying it is safe and useful."""
        client = slot.client
        assert client is not None
        outcome, code, text = self._attempt(client, message)
        result = SendResult.for_message(message, outcome, code, text)
        if client.sock is not None:
            slot.replacement = False
            return result, False
        slot.client = None
        slot.lost = True
        if slot.replacement:
            batch.stop(f"{self.address} dropped a new connection: {text}")
            return result, False
        # The connection is gone. Without a reply after the final dot the server may have
        # taken the message, so only a refused or unfinished one is tried again.
        maybe_delivered = client.payload_sent and code is None
        return result, outcome is Outcome.TEMPORARY and not maybe_delivered

    def _attempt(
        self, client: _Client, message: OutgoingMessage
    ) -> tuple[Outcome, int | None, str]:
        """Send one message on ``client``; classify what happened as (outcome, code, text)."""
        client.payload_sent = False
        try:
            options = self._mail_options(client, message)
            client.sendmail(message.sender, [message.recipient], message.data, options)
        except _Unsupported as exc:
            return Outcome.PERMANENT, None, str(exc)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = exc.recipients.get(message.recipient, (0, b"recipient refused"))
            return Outcome.from_smtp_code(code, at_rcpt=True), code, _decode(reply)
        except smtplib.SMTPResponseException as exc:
            # SMTPSenderRefused (MAIL), SMTPDataError (DATA) and the rest carry a reply.
            if exc.smtp_code == 421:
                client.close()  # "closing transmission channel" (RFC 5321 §3.8)
            elif isinstance(exc, smtplib.SMTPDataError) and not client.payload_sent:
                _reset_transaction(client)  # smtplib skips RSET when DATA itself is refused
            return Outcome.from_smtp_code(exc.smtp_code), exc.smtp_code, _decode(exc.smtp_error)
        except (smtplib.SMTPException, OSError) as exc:
            # SMTPServerDisconnected, ConnectionResetError, TimeoutError, ssl.SSLError.
            client.close()
            when = "after the message was sent" if client.payload_sent else "before DATA ended"
            return Outcome.TEMPORARY, None, f"connection lost {when}: {exc}"
        code, reply = client.data_reply
        return Outcome.SENT, code, _decode(reply)

    def _mail_options(self, client: _Client, message: OutgoingMessage) -> list[str]:
        """MAIL FROM parameters the message needs: SMTPUTF8 and 8BITMIME (RFC 6531, 6152)."""
        options = []
        if not (message.sender.isascii() and message.recipient.isascii()):
            if not client.has_extn("smtputf8"):
                raise _Unsupported(
                    f"{self.address} does not support SMTPUTF8, needed for a non-ASCII address"
                )
            options.append("SMTPUTF8")
        if not message.data.isascii() and client.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        return options


class _Unsupported(Exception):
    """The server lacks an extension this message needs."""


def _decode(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def _reply_text(exc: smtplib.SMTPResponseException) -> str:
    return f"{exc.smtp_code} {_decode(exc.smtp_error)}"


def _reset_transaction(client: _Client) -> None:
    """RSET so the connection can carry the next message; close it if even that fails."""
    try:
        client.rset()
    except (smtplib.SMTPException, OSError):
        client.close()


def _quit(client: _Client) -> None:
    """Say QUIT politely, without waiting long for a server that does not answer."""
    try:
        if client.sock is not None:
            client.sock.settimeout(_QUIT_TIMEOUT)
        client.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        client.close()
