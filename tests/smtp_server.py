"""A real SMTP server (aiosmtpd) on 127.0.0.1 for tests: records what arrives, scripts failures.

Use it as a context manager, or through the ``smtp_server`` fixture in tests/conftest.py::

    with SMTPTestServer(auth=("ann", "secret")) as server:
        server.reply_to_rcpt("gone@example.com", "550 5.1.1 No such user")
        server.disconnect_at(100)              # 421 and hang up at the 100th MAIL FROM
        ...send to server.host, server.port...
        assert len(server.messages) == 199

Failures are scripted per transaction: the Nth MAIL FROM the server receives, counted from 1
since start or :meth:`SMTPTestServer.reset`, across all connections. A retried message is a
new transaction. ``python -m tests.smtp_server --port 2525`` runs one in the foreground.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from types import TracebackType
from typing import Any, AnyStr, Literal, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

Stage = Literal["mail", "rcpt", "data", "end-of-data"]
STAGES: tuple[Stage, ...] = ("mail", "rcpt", "data", "end-of-data")
CLOSING_REPLY = "421 4.7.0 Too many messages on this connection, closing"


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the server accepted: its envelope and exact bytes."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    message_id: str | None  # the Message-ID header without angle brackets
    connection: int  # which connection carried it, counted from 1
    auth_user: str | None  # the AUTH login, if the client logged in


@dataclass(frozen=True)
class Fault:
    """What to do instead of the normal reply at one stage of one transaction.

    Stages: ``mail`` (MAIL FROM), ``rcpt`` (every RCPT TO), ``data`` (the DATA command; a
    reset there happens mid-DATA, after the first line of the message), ``end-of-data``
    (after the final dot; a reset there happens after the message was recorded, so the
    client never learns that it was delivered). A reply starting with 421 also closes the
    connection, as a real server does.
    """

    stage: Stage
    reply: str | None = None  # reply instead of the normal one; None keeps the normal one
    reset: bool = False  # abort the TCP connection (RST) instead of replying
    delay: float = 0.0  # seconds to wait first, to make a client time out


class _State:
    """Everything the server records and every script it follows, shared across threads."""

    def __init__(self, auth: tuple[str, str] | None, pipelining: bool) -> None:
        self.auth = auth
        self.pipelining = pipelining
        self.lock = threading.Condition()
        self.messages: list[ReceivedMessage] = []
        self.ehlo_names: list[str] = []
        self.connections = 0
        self.transactions = 0
        self.faults: dict[tuple[int, Stage], Fault] = {}
        self.pipelined = 0  # MAIL FROM commands that arrived with the next command behind them
        self.rcpt_replies: dict[str, str] = {}

    def take_fault(self, transaction: int, stage: Stage) -> Fault | None:
        with self.lock:
            return self.faults.pop((transaction, stage), None)

    def record(self, envelope: Envelope, connection: int, auth_user: str | None) -> None:
        data = envelope.original_content or b""
        header = BytesHeaderParser(policy=default_policy).parsebytes(data).get("Message-ID")
        message = ReceivedMessage(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=bytes(data),
            message_id=str(header).strip().strip("<>") if header else None,
            connection=connection,
            auth_user=auth_user,
        )
        with self.lock:
            self.messages.append(message)
            self.lock.notify_all()


class _Handler:
    """aiosmtpd hooks: per-recipient replies at RCPT, recording and faults at end of DATA."""

    def __init__(self, state: _State) -> None:
        self.state = state

    async def handle_EHLO(
        self, server: _ScriptedSMTP, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:
        # aiosmtpd reads one command at a time, so it copes with pipelined input; it just
        # does not say so. PIPELINING goes before the final "250 HELP" line.
        session.host_name = hostname
        if self.state.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_RCPT(
        self, server: _ScriptedSMTP, session: Session, envelope: Envelope,
        address: str, rcpt_options: list[str],
    ) -> str:
        with self.state.lock:
            reply = self.state.rcpt_replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(
        self, server: _ScriptedSMTP, session: Session, envelope: Envelope
    ) -> str:
        fault = self.state.take_fault(server.transaction, "end-of-data")
        if fault is not None and fault.reply is not None and not fault.reset:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            return fault.reply
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
        self.state.record(envelope, server.connection, login.decode() if login else None)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.reset:
                server.reset_connection()
        return f"250 2.0.0 OK: queued as {server.transaction}"


class _ScriptedSMTP(SMTP):
    """aiosmtpd's SMTP session, plus connection counting, scripted faults and AUTH enforcement."""

    def __init__(self, state: _State, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.state = state
        self.connection = 0
        self.transaction = 0

    async def smtp_HELO(self, hostname: str) -> None:
        self._note_greeting(hostname)
        await super().smtp_HELO(hostname)

    async def smtp_EHLO(self, hostname: str) -> None:
        self._note_greeting(hostname)
        await super().smtp_EHLO(hostname)

    def _note_greeting(self, hostname: str) -> None:
        with self.state.lock:
            self.state.ehlo_names.append(hostname)
            if not self.connection:  # EHLO again after STARTTLS is the same connection
                self.state.connections += 1
                self.connection = self.state.connections

    async def smtp_MAIL(self, arg: str | None) -> None:
        # A client that pipelines (RFC 2920) has sent RCPT TO before this MAIL FROM is
        # answered, so it is already waiting in the read buffer; in lockstep nothing is.
        waiting = bool(getattr(self._reader, "_buffer", b""))
        with self.state.lock:
            self.state.transactions += 1
            self.transaction = self.state.transactions
            self.state.pipelined += waiting
        assert self.session is not None
        if self.state.auth and not self.session.authenticated:
            await self.push("530 5.7.0 Authentication required")
            return
        if not await self._fault("mail"):
            await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if not await self._fault("rcpt"):
            await super().smtp_RCPT(arg)

    async def smtp_DATA(self, arg: str) -> None:
        assert self.envelope is not None
        fault = self.state.take_fault(self.transaction, "data")
        if fault is None or not self.envelope.rcpt_tos:
            await super().smtp_DATA(arg)
            return
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.reset:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            await self._reader.readuntil(b"\r\n")  # the client has started sending
            self.reset_connection()
        if fault.reply is not None:
            await self.push(fault.reply)
        else:
            await super().smtp_DATA(arg)

    async def _fault(self, stage: Stage) -> bool:
        """Apply the fault scripted for this stage; True if it replaced the normal reply."""
        fault = self.state.take_fault(self.transaction, stage)
        if fault is None:
            return False
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.reset:
            self.reset_connection()
        if fault.reply is None:
            return False
        await self.push(fault.reply)
        return True

    async def push(self, status: AnyStr) -> None:
        await super().push(status)
        text = status.decode() if isinstance(status, bytes) else status
        # 421 means "closing transmission channel" (RFC 5321 §3.8), so close it.
        if text.startswith("421") and self.transport is not None:
            self.transport.close()

    def reset_connection(self) -> None:
        """Abort the connection with a TCP reset and end this session's task."""
        transport = self.transport
        assert isinstance(transport, asyncio.Transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0: close() sends RST, so the client sees ConnectionResetError.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        raise asyncio.CancelledError  # aiosmtpd treats this as a lost connection


class _Controller(Controller):
    """aiosmtpd's threaded controller, building _ScriptedSMTP and binding a free port."""

    def __init__(self, state: _State, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.state = state

    def factory(self) -> _ScriptedSMTP:
        return _ScriptedSMTP(self.state, self.handler, loop=self.loop, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        # Bound to port 0: learn the port the OS chose before the controller connects to it.
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SMTPTestServer:
    """A running aiosmtpd server on 127.0.0.1 with knobs for failure scripts.

    ``auth=(user, password)`` makes the server refuse MAIL FROM (530) until the client logs
    in with those credentials. ``pipelining=False`` stops it advertising PIPELINING (RFC 2920),
    so clients speak command and reply. ``tls="starttls"`` (required before MAIL) or ``tls="ssl"``
    (implicit TLS) need ``certificate=(certfile, keyfile)``, see :func:`make_self_signed_cert`.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        auth: tuple[str, str] | None = None,
        tls: Literal["starttls", "ssl"] | None = None,
        certificate: tuple[Path, Path] | None = None,
        pipelining: bool = True,
    ) -> None:
        if tls and certificate is None:
            raise ValueError("tls needs certificate=(certfile, keyfile)")
        self.host = host
        self.port = port
        self.tls = tls
        self._state = _State(auth, pipelining)
        kwargs: dict[str, Any] = {
            "hostname": host,
            "port": port,
            "server_hostname": "smtp.test",
            "ready_timeout": 10.0,
            # AUTH over plain text is fine on loopback; enforcement is done in smtp_MAIL.
            "auth_require_tls": False,
        }
        if auth is not None:
            kwargs["authenticator"] = self._authenticate
        if tls is not None and certificate is not None:
            context = server_ssl_context(*certificate)
            if tls == "ssl":
                kwargs["ssl_context"] = context
            else:
                kwargs["tls_context"] = context
                kwargs["require_starttls"] = True
        self._controller = _Controller(self._state, _Handler(self._state), **kwargs)
        self._running = False

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        """Start serving in a background thread; ``port`` then holds the real port."""
        self._controller.start()
        self._running = True
        self.port = self._controller.port
        return self

    def stop(self) -> None:
        """Stop the server and drop every connection. Safe to call more than once."""
        if self._running:
            self._running = False
            self._controller.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget received messages, counters and scripts (the server keeps running)."""
        with self._state.lock:
            self._state.messages.clear()
            self._state.ehlo_names.clear()
            self._state.connections = 0
            self._state.transactions = 0
            self._state.pipelined = 0
            self._state.faults.clear()
            self._state.rcpt_replies.clear()

    # -- what arrived -------------------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        """A snapshot of the messages received so far, in arrival order."""
        with self._state.lock:
            return list(self._state.messages)

    @property
    def message_ids(self) -> list[str | None]:
        """The Message-IDs received so far, in arrival order (duplicates show twice)."""
        return [message.message_id for message in self.messages]

    @property
    def connections(self) -> int:
        """How many client connections said EHLO or HELO."""
        with self._state.lock:
            return self._state.connections

    @property
    def transactions(self) -> int:
        """How many MAIL FROM commands arrived."""
        with self._state.lock:
            return self._state.transactions

    @property
    def pipelined(self) -> int:
        """How many MAIL FROM commands arrived with more commands already behind them."""
        with self._state.lock:
            return self._state.pipelined

    @property
    def ehlo_names(self) -> list[str]:
        """The host names clients gave in EHLO/HELO."""
        with self._state.lock:
            return list(self._state.ehlo_names)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Wait until at least ``count`` messages arrived; raise TimeoutError after ``timeout``."""
        with self._state.lock:
            if not self._state.lock.wait_for(lambda: len(self._state.messages) >= count, timeout):
                raise TimeoutError(
                    f"{len(self._state.messages)} of {count} messages arrived in {timeout} s"
                )
            return list(self._state.messages)

    # -- scripts ------------------------------------------------------------------------------

    def fail_at(
        self,
        transaction: int,
        stage: Stage,
        *,
        reply: str | None = None,
        reset: bool = False,
        delay: float = 0.0,
    ) -> None:
        """Script a :class:`Fault` for the Nth transaction (the Nth MAIL FROM, from 1)."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}")
        with self._state.lock:
            self._state.faults[transaction, stage] = Fault(stage, reply, reset, delay)

    def disconnect_at(self, transaction: int, reply: str = CLOSING_REPLY) -> None:
        """Answer the Nth MAIL FROM with 421 and close the connection."""
        self.fail_at(transaction, "mail", reply=reply)

    def reset_during_data_at(self, transaction: int) -> None:
        """Reset the connection in the middle of the Nth message's DATA."""
        self.fail_at(transaction, "data", reset=True)

    def reply_to_rcpt(self, address: str, reply: str) -> None:
        """Answer every RCPT TO for ``address`` with ``reply`` (e.g. ``550 5.1.1 No such user``)."""
        with self._state.lock:
            self._state.rcpt_replies[address] = reply

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        expected = self._state.auth
        ok = (
            expected is not None
            and isinstance(auth_data, LoginPassword)
            and (auth_data.login.decode(), auth_data.password.decode()) == expected
        )
        # handled=False: aiosmtpd answers a failure with 535 5.7.8.
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


@contextmanager
def running_server(**options: Any) -> Iterator[SMTPTestServer]:
    """Start an :class:`SMTPTestServer` with ``options`` and stop it afterwards."""
    server = SMTPTestServer(**options)
    with server:
        yield server


def make_self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """Create a self-signed certificate for 127.0.0.1 and localhost with the openssl CLI.

    Returns (certfile, keyfile). Raises FileNotFoundError if openssl is not installed.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("the openssl command is not installed")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def server_ssl_context(certfile: Path, keyfile: Path) -> ssl.SSLContext:
    """A server-side TLS context for the test server."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, keyfile)
    return context


def client_ssl_context(certfile: Path) -> ssl.SSLContext:
    """A verifying client context that trusts only the test certificate."""
    return ssl.create_default_context(cafile=str(certfile))


def main(argv: list[str] | None = None) -> None:
    """Run a test server in the foreground and print each message that arrives."""
    parser = argparse.ArgumentParser(prog="python -m tests.smtp_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--auth", metavar="USER:PASSWORD", help="require AUTH with these")
    parser.add_argument("--no-pipelining", action="store_true",
                        help="do not advertise PIPELINING")
    args = parser.parse_args(argv)
    # aiosmtpd logs a deprecation of its own attribute on every AUTH; not our concern here.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    user, _, password = (args.auth or "").partition(":")
    auth = (user, password) if args.auth else None
    with SMTPTestServer(host=args.host, port=args.port, auth=auth,
                        pipelining=not args.no_pipelining) as server:
        print(f"listening on {server.host}:{server.port}; Ctrl-C stops", flush=True)
        seen = 0
        try:
            while True:
                time.sleep(0.2)
                for message in server.messages[seen:]:
                    print(f"{message.mail_from} -> {', '.join(message.rcpt_tos)}: "
                          f"{message.message_id} ({len(message.data)} bytes)", flush=True)
                seen = len(server.messages)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
