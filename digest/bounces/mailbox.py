"""``digest bounces fetch``: read reports from a mailbox over IMAP or POP3 and act on them.

Each message is processed in its own transaction; only after that commits is it moved to
``bounce_mailbox_processed`` (IMAP) or deleted. A message that is not a report stays where
it is, unread, and is listed so a person can look at it. Certificates are always checked:
TLS from the first byte (``ssl``) or upgraded with STARTTLS/STLS (``starttls``). The only
plain-text mode is ``insecure-loopback``, which refuses any host but this machine.
"""

from __future__ import annotations

import contextlib
import imaplib
import ipaddress
import poplib
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self

from digest.bounces import KEPT, Outcome, process
from digest.config import Settings
from digest.db import Database
from digest.errors import ConfigError, MailboxError
from digest.verp import require_usable

_PORTS = {
    ("imap", "ssl"): 993, ("imap", "starttls"): 143, ("imap", "insecure-loopback"): 143,
    ("pop3", "ssl"): 995, ("pop3", "starttls"): 110, ("pop3", "insecure-loopback"): 110,
}


@dataclass
class FetchReport:
    """What one ``digest bounces fetch`` run did, message by message."""

    processed: list[tuple[str, Outcome]] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)  # (message, subject)
    where: str = ""  # the folder read, for the summary


class Mailbox(Protocol):
    """A mailbox session: list messages, mark one done, finish."""

    def messages(self, limit: int) -> Iterator[tuple[str, bytes]]:
        """(reference, raw bytes) of up to ``limit`` messages, oldest first, left unread."""
        ...

    def done(self, reference: str) -> None:
        """Move the message to the processed folder, or mark it for deletion."""
        ...

    def finish(self) -> None:
        """Make the moves and deletions final and log out."""
        ...

    def close(self) -> None:
        """Drop the connection (after finish, or on an error)."""
        ...


def fetch(
    db: Database, settings: Settings, *, limit: int = 500,
    on_message: Callable[[str, Outcome, str], None] | None = None,
) -> FetchReport:
    """Read up to ``limit`` messages from the configured mailbox and process each."""
    require_usable(settings)
    report = FetchReport(where=_where(settings))
    with _Session(open_mailbox(settings)) as box:
        for reference, raw in box.messages(limit):
            outcome = process(db, settings, raw, source=settings.bounce_mailbox_protocol)
            subject = _subject(raw)
            if on_message is not None:
                on_message(reference, outcome, subject)
            if outcome.result == KEPT:
                report.kept.append((reference, subject))
                continue
            # The transaction has committed: only now may the message leave the mailbox.
            box.done(reference)
            report.processed.append((reference, outcome))
        box.finish()
    return report


def open_mailbox(settings: Settings) -> Mailbox:
    """Connect and log in to the configured IMAP or POP3 mailbox."""
    host = settings.bounce_mailbox_host.strip()
    if not host:
        raise ConfigError(
            "bounce_mailbox_host is not set: set [bounce_mailbox] host, username and "
            "DIGEST_BOUNCE_MAILBOX_PASSWORD, or use digest bounces receive instead"
        )
    protocol, security = settings.bounce_mailbox_protocol, settings.bounce_mailbox_security
    if security == "insecure-loopback" and not _is_loopback(host):
        raise ConfigError(
            f"bounce_mailbox_security = insecure-loopback sends the password in clear and is "
            f"only allowed to this machine, not {host!r}; use ssl or starttls"
        )
    port = settings.bounce_mailbox_port or _PORTS[(protocol, security)]
    context = _tls_context(settings)
    try:
        if protocol == "imap":
            return _Imap.connect(settings, host, port, security, context)
        return _Pop3.connect(settings, host, port, security, context)
    except ssl.SSLCertVerificationError as exc:
        raise MailboxError(
            f"the certificate of {host}:{port} does not verify ({exc.verify_message}); "
            "set bounce_mailbox_cafile to the CA that signed it"
        ) from None
    except (OSError, imaplib.IMAP4.error, poplib.error_proto) as exc:
        reason = _reason(exc)
        if "auth" in reason.lower() or "password" in reason.lower():
            reason += "; check bounce_mailbox_username and DIGEST_BOUNCE_MAILBOX_PASSWORD"
        raise MailboxError(f"cannot read the bounce mailbox at {host}:{port} ({protocol}, "
                           f"{security}): {reason}") from None


class _Session:
    """Close the mailbox however the run ends; turn protocol errors into MailboxError."""

    def __init__(self, box: Mailbox) -> None:
        self.box = box

    def __enter__(self) -> Mailbox:
        return self.box

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.box.close()
        if isinstance(exc, OSError | imaplib.IMAP4.error | poplib.error_proto):
            raise MailboxError(f"the bounce mailbox failed during the run: {_reason(exc)}; "
                               "what was processed so far is saved, run again") from exc


class _Imap:
    """IMAP4rev1 via imaplib: UID SEARCH, BODY.PEEK[] (stays unread), MOVE or COPY+EXPUNGE."""

    def __init__(self, client: imaplib.IMAP4, settings: Settings) -> None:
        self.client = client
        self.processed = settings.bounce_mailbox_processed.strip()
        self.capabilities = {str(c).upper() for c in client.capabilities}
        self.expunge: list[str] = []

    @classmethod
    def connect(cls, settings: Settings, host: str, port: int, security: str,
                context: ssl.SSLContext) -> Self:
        timeout = settings.bounce_mailbox_timeout
        client: imaplib.IMAP4
        if security == "ssl":
            client = imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=timeout)
        else:
            client = imaplib.IMAP4(host, port, timeout=timeout)
            if security == "starttls":
                client.starttls(ssl_context=context)
        try:
            client.login(settings.bounce_mailbox_username, settings.bounce_mailbox_password)
            folder = settings.bounce_mailbox_folder
            status, data = client.select(_quote(folder))
            if status != "OK":
                raise MailboxError(f"cannot open folder {folder!r}: {_text(data)}")
            box = cls(client, settings)
            if box.processed:
                client.create(_quote(box.processed))  # "NO, already exists" is fine
        except BaseException:
            _quietly(client.shutdown)
            raise
        return box

    def messages(self, limit: int) -> Iterator[tuple[str, bytes]]:
        status, data = self.client.uid("SEARCH", "UNDELETED")
        if status != "OK":
            raise MailboxError(f"UID SEARCH failed: {_text(data)}")
        uids = _text(data[0] or b"").split()[:limit]
        for uid in uids:
            status, parts = self.client.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = next((item[1] for item in parts if isinstance(item, tuple)), None)
            if status != "OK" or not isinstance(raw, bytes):
                continue  # expunged by someone else meanwhile
            yield uid, raw

    def done(self, reference: str) -> None:
        if self.processed and "MOVE" in self.capabilities:
            self._ok(self.client.uid("MOVE", reference, _quote(self.processed)), "MOVE")
            return
        if self.processed:
            self._ok(self.client.uid("COPY", reference, _quote(self.processed)), "COPY")
        self._ok(self.client.uid("STORE", reference, "+FLAGS.SILENT", r"(\Deleted)"), "STORE")
        self.expunge.append(reference)

    def finish(self) -> None:
        if self.expunge:
            if "UIDPLUS" in self.capabilities:
                self.client.uid("EXPUNGE", ",".join(self.expunge))
            else:
                self.client.expunge()
        self.client.close()
        self.client.logout()

    def close(self) -> None:
        _quietly(self.client.shutdown)

    @staticmethod
    def _ok(response: tuple[str, list[object]], command: str) -> None:
        if response[0] != "OK":
            raise MailboxError(f"IMAP {command} failed: {_text(response[1])}")


class _Pop3:
    """POP3 via poplib: RETR leaves the message, DELE after the commit, QUIT makes it final.

    POP3 has no folders, so processed messages are deleted whatever
    ``bounce_mailbox_processed`` says.
    """

    def __init__(self, client: poplib.POP3) -> None:
        self.client = client
        self.finished = False

    @classmethod
    def connect(cls, settings: Settings, host: str, port: int, security: str,
                context: ssl.SSLContext) -> Self:
        timeout = settings.bounce_mailbox_timeout
        client: poplib.POP3
        if security == "ssl":
            client = poplib.POP3_SSL(host, port, context=context, timeout=timeout)
        else:
            client = poplib.POP3(host, port, timeout=timeout)
            if security == "starttls":
                client.stls(context=context)
        try:
            client.user(settings.bounce_mailbox_username)
            client.pass_(settings.bounce_mailbox_password)
        except BaseException:
            _quietly(client.close)
            raise
        return cls(client)

    def messages(self, limit: int) -> Iterator[tuple[str, bytes]]:
        _, listing, _ = self.client.list()
        numbers = [line.split()[0].decode() for line in listing][:limit]
        for number in numbers:
            _, lines, _ = self.client.retr(int(number))
            yield number, b"\r\n".join(lines) + b"\r\n"

    def done(self, reference: str) -> None:
        self.client.dele(int(reference))

    def finish(self) -> None:
        self.client.quit()
        self.finished = True

    def close(self) -> None:
        if not self.finished:
            # Without QUIT the server forgets the DELEs: nothing is lost, a rerun re-reads.
            _quietly(self.client.close)


def _tls_context(settings: Settings) -> ssl.SSLContext:
    cafile = settings.bounce_mailbox_cafile.strip() or None
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"bounce_mailbox_cafile {cafile!r} cannot be read: {exc}") from None


def _is_loopback(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def _where(settings: Settings) -> str:
    if settings.bounce_mailbox_protocol == "pop3":
        return "the POP3 mailbox"
    return f"IMAP folder {settings.bounce_mailbox_folder}"


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _subject(raw: bytes) -> str:
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    match = re.search(rb"(?im)^subject:[ \t]*(.*(?:\r?\n[ \t].*)*)", head)
    text = match[1].decode("utf-8", "replace") if match else ""
    return " ".join(text.split())[:120]


def _text(data: object) -> str:
    if isinstance(data, list):
        return " ".join(_text(item) for item in data)
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data)


def _reason(exc: BaseException) -> str:
    text = _text(list(exc.args)) if exc.args else type(exc).__name__
    return text or type(exc).__name__


def _quietly(action: Callable[[], object]) -> None:
    with contextlib.suppress(OSError, imaplib.IMAP4.error, poplib.error_proto):
        action()
