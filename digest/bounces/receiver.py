"""``digest bounces receive``: an SMTP or LMTP server (aiosmtpd) for the bounce address.

The mail server that receives the bounce address hands each message over (Postfix: an LMTP
transport). The reply waits for the report's transaction to commit: 250 means stored, and a
451 makes the mail server keep the message and try again later, so nothing is lost if the
database is down. A message that is not a report is written to ``bounce_keep_dir`` before
the 250, so it is kept for a person to read rather than dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from digest.bounces import KEPT, process
from digest.config import Settings
from digest.db import Database
from digest.errors import ConfigError
from digest.models import utcnow
from digest.verp import bounce_parts, require_usable

#: Largest message accepted; a bounce that returns a whole issue with images is well under.
MAX_MESSAGE = 25 * 1024 * 1024

log = logging.getLogger(__name__)


class BounceHandler:
    """aiosmtpd handler: accept mail for the bounce address only, process it, then answer."""

    def __init__(self, db: Database, settings: Settings, *, lmtp: bool,
                 report: Callable[[str], None]) -> None:
        self.db = db
        self.settings = settings
        self.lmtp = lmtp
        self.report = report
        self.local, self.domain = bounce_parts(settings)
        self.keep_dir = Path(settings.bounce_keep_dir)

    def accepts(self, address: str) -> bool:
        """True for the bounce address and its +tag (VERP) forms, in any letter case."""
        local, at, domain = address.strip().strip("<>").lower().rpartition("@")
        return bool(at) and domain == self.domain and (
            local == self.local or local.startswith(self.local + "+")
        )

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        """Refuse every recipient but the bounce address: this is no general mail server."""
        if not self.accepts(address):
            return "550 5.1.1 Not a bounce address of this list"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Process the message in a worker thread; answer once it is stored."""
        raw = envelope.original_content or b""
        try:
            reply = await asyncio.to_thread(self._handle, raw, tuple(envelope.rcpt_tos))
        except Exception:
            log.exception("could not store a bounce report")
            self.report("error: could not store a report; the mail server will retry it")
            reply = "451 4.3.0 Could not store the report, try again later"
        # LMTP answers once per recipient (RFC 2033 §4.2); the message is the same for all.
        count = len(envelope.rcpt_tos) if self.lmtp else 1
        return "\r\n".join([reply] * max(count, 1))

    def _handle(self, raw: bytes, recipients: tuple[str, ...]) -> str:
        source = "lmtp" if self.lmtp else "smtp"
        outcome = process(self.db, self.settings, raw, source=source,
                          envelope_recipients=recipients)
        if outcome.result == KEPT:
            path = keep(self.keep_dir, raw)
            self.report(f"kept {path}: not a bounce or complaint, read it yourself")
            return "250 2.0.0 Kept for a person to read"
        self.report(f"{source}: {outcome.line}")
        return "250 2.0.0 Report processed"


def keep(folder: Path, raw: bytes) -> Path:
    """Write a message that is not a report into folder, atomically, and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = utcnow().strftime("%Y%m%dT%H%M%S")
    path = folder / f"{stamp}-{hashlib.sha256(raw).hexdigest()[:16]}.eml"
    fd, temp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def serve(
    db: Database, settings: Settings, *, host: str, port: int, lmtp: bool,
    socket_path: str | None = None, report: Callable[[str], None] = print,
) -> None:
    """Run the receiver until SIGTERM or SIGINT; ``report`` gets one line per message."""
    if not settings.bounce_address.strip():
        raise ConfigError("bounce_address is not set: digest bounces receive accepts mail "
                          "for that address only; set it, e.g. bounces@news.example.org")
    require_usable(settings)
    handler = BounceHandler(db, settings, lmtp=lmtp, report=report)
    asyncio.run(_serve(handler, host=host, port=port, socket_path=socket_path, report=report))


async def _serve(handler: BounceHandler, *, host: str, port: int, socket_path: str | None,
                 report: Callable[[str], None]) -> None:
    loop = asyncio.get_running_loop()
    kind = LMTP if handler.lmtp else SMTP

    def protocol() -> Any:
        return kind(handler, data_size_limit=MAX_MESSAGE, hostname="digest-bounces",
                    ident="digest bounces", loop=loop)

    if socket_path:
        stale = Path(socket_path)
        if stale.is_socket():
            stale.unlink()  # left by a receiver that was killed
        server = await loop.create_unix_server(protocol, socket_path)
        where = socket_path
    else:
        try:
            server = await loop.create_server(protocol, host, port)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        bound = server.sockets[0].getsockname()
        where = f"{bound[0]}:{bound[1]}"
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    report(f"digest bounces receive: {'LMTP' if handler.lmtp else 'SMTP'} on {where}, "
           f"for {handler.local}@{handler.domain}")
    async with server:
        await stop.wait()
    report("digest bounces receive: stopped")
