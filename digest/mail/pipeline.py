"""One SMTP connection driven without blocking: pipelined envelopes (RFC 2920), replies per message.

smtplib opens the connection (connect, EHLO, STARTTLS, AUTH); a :class:`Wire` then owns the
socket. With PIPELINING, one write carries RSET (after a failed message), MAIL FROM, RCPT TO
and DATA, and the next message's envelope follows the previous body in the same write, so a
message costs one round trip and usually one system call each way. Without PIPELINING the
same commands go one at a time, each after the previous reply (RFC 5321 command and reply).

Every reply still classifies its own message exactly as the plain path did: a refusal at MAIL
or RCPT (552 there is temporary), a DATA that is not answered 354, the reply after the final
dot. What happens when the connection goes is decided by :meth:`Wire.abandon`.
"""

from __future__ import annotations

import re
import smtplib
import ssl
import time
from collections import deque
from dataclasses import dataclass
from itertools import islice

from digest.mail.base import Outcome, OutgoingMessage, SendResult

_DOT_AT_LINE_START = re.compile(rb"^\.", re.MULTILINE)
# Octets that would end or split an SMTP command: an address with one is refused outright.
_UNSAFE_IN_COMMAND = re.compile(r"[\x00-\x20<>\x7f]")
_END_OF_DATA = memoryview(b".\r\n")
_RSET = b"RSET\r\n"
_DATA = b"DATA\r\n"
_READ_SIZE = 1 << 16
_MAX_BUFFERS = 64  # buffers per sendmsg call (well under any IOV_MAX)

# What a reply answers.
_K_RSET, _K_MAIL, _K_RCPT, _K_DATA, _K_END = range(5)


class LostConnection(Exception):
    """The connection broke (reset, hang-up, timeout, garbage); ``str()`` says how.

    ``finished`` holds the flights that replies read just before the break had finished.
    """

    def __init__(self, reason: str, finished: list[Flight] | None = None) -> None:
        super().__init__(reason)
        self.finished = finished or []


@dataclass(slots=True, eq=False)
class Flight:
    """One message on its way through one connection."""

    index: int  # position in the batch
    message: OutgoingMessage
    refusal: tuple[Outcome, int, str] | None = None  # first refusal of its envelope
    dot_at: int = -1  # offset in the connection's output just past its final dot, once queued
    result: SendResult | None = None


class Wire:
    """An SMTP connection after EHLO (and STARTTLS, AUTH), used without blocking."""

    def __init__(self, client: smtplib.SMTP, address: str, timeout: float) -> None:
        sock = client.sock
        if sock is None:
            raise LostConnection("the connection closed before the first message")
        self.client = client
        self.sock = sock
        self.address = address
        self.timeout = timeout
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.pipelining = client.has_extn("pipelining")
        self.smtputf8 = client.has_extn("smtputf8")
        self.eightbit = client.has_extn("8bitmime")
        sock.setblocking(False)
        self._out: deque[memoryview] = deque()
        self._queued = 0  # bytes ever queued for writing
        self.written = 0  # bytes ever written
        self._in = bytearray()
        self._lines: list[bytes] = []
        self._expect: deque[tuple[int, Flight | None]] = deque()
        self._held: deque[tuple[int, Flight | None, bytes]] = deque()  # without PIPELINING
        self.flights: deque[Flight] = deque()  # unfinished, in order
        self._envelope: Flight | None = None  # the flight whose DATA reply is awaited
        self._needs_reset = False
        self._sender: tuple[str, bytes] = ("", b"")
        self.closing: tuple[int, str, Flight | None] | None = None  # a 421 arrived
        self.last_activity = time.monotonic()

    # -- state ------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True when a new envelope can be queued (no other envelope awaits its DATA reply)."""
        return self._envelope is None and self.closing is None

    @property
    def busy(self) -> bool:
        """True while replies are awaited or output is queued."""
        return bool(self._expect or self._out or self._held)

    @property
    def wants_write(self) -> bool:
        """True when output is queued that the socket did not take yet."""
        return bool(self._out)

    def deadline(self) -> float | None:
        """When the connection counts as timed out, or None when nothing is awaited."""
        return self.last_activity + self.timeout if self.busy else None

    # -- queueing ---------------------------------------------------------------------------

    def start(self, flight: Flight) -> Flight | None:
        """Queue flight's envelope; return it at once if it cannot be sent on this server."""
        message = flight.message
        sender, recipient = message.sender, message.recipient
        if self._sender[0] != sender or not sender:
            self._sender = (sender, self._path(sender))
        sender_path = self._sender[1]
        recipient_path = self._path(recipient)
        if not sender_path or not recipient_path:
            bad = sender if not sender_path else recipient
            flight.result = SendResult.for_message(
                message, Outcome.REJECTED, None,
                f"address {bad!r} cannot go into an SMTP command (control character, "
                "space or angle bracket)",
            )
            return flight
        options = b""
        if not (sender.isascii() and recipient.isascii()):
            if not self.smtputf8:
                flight.result = SendResult.for_message(
                    message, Outcome.REJECTED, None,
                    f"{self.address} does not support SMTPUTF8, needed for a non-ASCII address",
                )
                return flight
            options = b" SMTPUTF8"
        if self.eightbit and not message.data.isascii():
            options += b" BODY=8BITMIME"
        commands: list[tuple[int, Flight | None, bytes]] = []
        if self._needs_reset:
            commands.append((_K_RSET, None, _RSET))
            self._needs_reset = False
        commands.append((_K_MAIL, flight, b"MAIL FROM:<" + sender_path + b">" + options + b"\r\n"))
        commands.append((_K_RCPT, flight, b"RCPT TO:<" + recipient_path + b">\r\n"))
        commands.append((_K_DATA, flight, _DATA))
        self.flights.append(flight)
        self._envelope = flight
        if self.pipelining:
            self._write(b"".join(command for _, _, command in commands))
            self._expect.extend((kind, owner) for kind, owner, _ in commands)
        else:
            self._held.extend(commands)
            self._release()
        return None

    @staticmethod
    def _path(address: str) -> bytes:
        """The address as it goes between angle brackets, or b"" if it is unsafe there."""
        if not address or _UNSAFE_IN_COMMAND.search(address):
            return b""
        return address.encode("ascii") if address.isascii() else address.encode("utf-8")

    def _release(self) -> None:
        """Without PIPELINING: send the next held command once every reply is in."""
        if not self._expect and self._held:
            kind, owner, command = self._held.popleft()
            self._write(command)
            self._expect.append((kind, owner))

    def _write(self, data: bytes) -> None:
        self._out.append(memoryview(data))
        self._queued += len(data)

    def _queue_body(self, flight: Flight) -> None:
        data = flight.message.data
        if not flight.message.wire_ready:
            # RFC 5321 §4.5.2: a line that starts with a dot gets one more. The search is a
            # C scan; the regex only runs on the rare message that needs it.
            if data.startswith(b".") or b"\n." in data:
                data = _DOT_AT_LINE_START.sub(b"..", data)
            if not data.endswith(b"\r\n"):
                data += b"\r\n"
        self._out.append(memoryview(data))
        self._out.append(_END_OF_DATA)
        self._queued += len(data) + 3
        flight.dot_at = self._queued

    # -- input and output -------------------------------------------------------------------

    def flush(self) -> None:
        """Write as much queued output as the socket takes now; LostConnection if it broke."""
        out = self._out
        while out:
            try:
                if self.tls:
                    sent = self.sock.send(out[0])
                else:
                    sent = self.sock.sendmsg(list(islice(out, _MAX_BUFFERS)))
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError,
                    ssl.SSLWantReadError):
                return
            except OSError as exc:
                raise LostConnection(exc.strerror or str(exc)) from exc
            if not sent:
                return
            self.written += sent
            self.last_activity = time.monotonic()
            while sent:
                first = out[0]
                if len(first) <= sent:
                    sent -= len(first)
                    out.popleft()
                else:
                    out[0] = first[sent:]
                    sent = 0

    def read(self) -> list[Flight]:
        """Read what arrived and act on every complete reply; return the flights it finished.

        Raises LostConnection when the server hung up or reset, after handling every reply
        that came before. A 421 reply sets :attr:`closing` instead.
        """
        ended = ""
        try:
            while True:
                chunk = self.sock.recv(_READ_SIZE)
                if not chunk:
                    ended = "Connection unexpectedly closed"
                    break
                self._in += chunk
                if len(chunk) < _READ_SIZE and not (
                    isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
                ):
                    break
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError,
                ssl.SSLWantWriteError):
            pass
        except OSError as exc:
            ended = exc.strerror or str(exc)
        self.last_activity = time.monotonic()
        finished: list[Flight] = []
        try:
            self._replies(finished)
        except LostConnection as exc:
            raise LostConnection(str(exc), finished) from None
        if ended and self.closing is None:
            raise LostConnection(ended, finished)
        return finished

    def _replies(self, finished: list[Flight]) -> None:
        buffer = self._in
        position = 0
        while self.closing is None:
            end = buffer.find(b"\n", position)
            if end < 0:
                break
            line = bytes(buffer[position:end])
            position = end + 1
            self._lines.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] == b"-":
                continue
            try:
                code = int(line[:3])
            except ValueError:
                raise LostConnection(f"unexpected reply {line[:60]!r}") from None
            text = b"\n".join(self._lines).decode("utf-8", "replace")
            self._lines = []
            if not self._expect:
                raise LostConnection(f"unexpected reply {code} {text}")
            kind, flight = self._expect.popleft()
            done = self._reply(kind, flight, code, text)
            if done is not None:
                finished.append(done)
            if not self.pipelining:
                self._release()
        del buffer[:position]

    def _reply(self, kind: int, flight: Flight | None, code: int, text: str) -> Flight | None:
        """Act on one reply; return the flight if this reply finished it."""
        if code == 421:
            # "Service not available, closing transmission channel" (RFC 5321 §3.8).
            self.closing = (code, text, flight)
            return None
        if flight is None:
            return None  # RSET, or the dot after an envelope that was refused
        if kind == _K_END:
            outcome = Outcome.from_smtp_code(code, text)
            return self._finish(flight, SendResult.for_message(flight.message, outcome, code,
                                                               text))
        if kind == _K_DATA:
            self._envelope = None
            if code == 354 and flight.refusal is None:
                self._queue_body(flight)
                self._expect.append((_K_END, flight))
                return None
            if code == 354:
                # Accepted DATA despite the refusal: end the (empty) message at once.
                self._write(b".\r\n")
                self._expect.append((_K_END, None))
            elif flight.refusal is None:
                flight.refusal = (Outcome.from_smtp_code(code, text), code, text)
            self._needs_reset = True
            return self._finish_refused(flight)
        if 200 <= code < 300 or flight.refusal is not None:
            return None  # a later reply of a refused envelope (503) adds nothing
        flight.refusal = (Outcome.from_smtp_code(code, text, at_rcpt=kind == _K_RCPT), code,
                          text)
        if self.pipelining:
            return None  # the DATA reply is on its way
        # Command and reply: skip the rest of this envelope, reset before the next one.
        while self._held and self._held[0][1] is flight:
            self._held.popleft()
        self._envelope = None
        self._needs_reset = True
        return self._finish_refused(flight)

    def _finish_refused(self, flight: Flight) -> Flight:
        assert flight.refusal is not None
        outcome, code, text = flight.refusal
        return self._finish(flight, SendResult.for_message(flight.message, outcome, code, text))

    def _finish(self, flight: Flight, result: SendResult) -> Flight:
        flight.result = result
        self.flights.remove(flight)
        return flight

    # -- ending -----------------------------------------------------------------------------

    def abandon(self, reason: str) -> list[tuple[Flight, bool]]:
        """Close the socket and settle every unfinished flight: (flight, safe to retry).

        A message whose final dot went out with no reply may have been delivered, so it is
        TEMPORARY and not retried here (the next run resends it with the same Message-ID). A
        message refused before (or by a 421 at any stage) cannot have been, so it may be tried
        once more on a new connection. A refusal already read stands.
        """
        closing = self.closing
        settled: list[tuple[Flight, bool]] = []
        for flight in list(self.flights):
            message = flight.message
            if flight.refusal is not None:
                self._finish_refused(flight)
                settled.append((flight, False))
                continue
            if closing is not None and closing[2] is flight:
                flight.result = SendResult.for_message(message, Outcome.DEFERRED, closing[0],
                                                       closing[1])
                settled.append((flight, True))
            elif closing is None and 0 <= flight.dot_at <= self.written:
                flight.result = SendResult.for_message(
                    message, Outcome.DEFERRED, None,
                    f"connection lost after the message was sent: {reason}",
                )
                settled.append((flight, False))
            else:
                flight.result = SendResult.for_message(
                    message, Outcome.DEFERRED, None, f"connection lost before DATA ended: {reason}"
                )
                settled.append((flight, True))
        self.flights.clear()
        self.close()
        return settled

    def close(self) -> None:
        """Drop the connection without QUIT."""
        self._out.clear()
        self.client.close()

    def quit(self, timeout: float) -> None:
        """Say QUIT when nothing is in flight, waiting at most timeout; then close."""
        try:
            if not self.busy:
                self.sock.setblocking(True)
                self.sock.settimeout(timeout)
                self.client.quit()
        except (smtplib.SMTPException, OSError):
            pass
        finally:
            self.client.close()
