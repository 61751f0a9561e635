"""The one interface every mail backend implements, and its per-recipient result."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from digest.errors import SendError
from digest.mail.replies import is_bounce

if TYPE_CHECKING:
    from digest.config import Settings


class Outcome(enum.Enum):
    """What happened to one message for one recipient, in terms any backend can report.

    The send engine acts on these alone, never on a protocol's reply codes: DEFERRED is
    retried later, REJECTED and BOUNCED are final, and BOUNCED also suppresses the address.
    """

    SENT = "sent"  # handed over: the next hop took responsibility for it
    DEFERRED = "deferred"  # not now (4xx, dropped connection, timeout): retry later
    REJECTED = "rejected"  # refused for good, but not because the address is dead (policy)
    BOUNCED = "bounced"  # refused for good because the address does not exist

    # The names of the first version, kept so plugins written against it still load.
    TEMPORARY = "deferred"
    PERMANENT = "rejected"

    @property
    def is_final_failure(self) -> bool:
        """REJECTED or BOUNCED: retrying cannot help."""
        return self is Outcome.REJECTED or self is Outcome.BOUNCED

    @classmethod
    def from_smtp_code(cls, code: int, text: str = "", *, at_rcpt: bool = False) -> Outcome:
        """Classify an SMTP reply: 2xx SENT, 5xx REJECTED or BOUNCED (see below), else DEFERRED."""
        if 200 <= code < 300:
            return cls.SENT
        # RFC 4954 §6: 530 "authentication required" is our configuration, not the
        # recipient; a permanent failure would wrongly give up on every subscriber.
        if code == 530:
            return cls.DEFERRED
        # RFC 5321 §4.5.3.1.10: 552 at RCPT is really "too many recipients" (452) and
        # clients SHOULD treat it as temporary.
        if code == 552 and at_rcpt:
            return cls.DEFERRED
        if 500 <= code < 600:
            return cls.BOUNCED if is_bounce(code, text) else cls.REJECTED
        return cls.DEFERRED


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A ready-to-send message: envelope plus the complete RFC 5322 bytes (CRLF line ends)."""

    message_id: str  # without angle brackets
    sender: str  # envelope MAIL FROM (the bounce address), honoured by every SMTP path
    recipient: str  # envelope RCPT TO
    data: bytes
    #: True when data already has CRLF line ends and no line starting with "." (the one
    #: builder guarantees both), so SMTP writes it as it is, without a dot-stuffing pass.
    wire_ready: bool = False


@dataclass(frozen=True, slots=True)
class SendResult:
    """One result per message handed to a backend, in the same order."""

    message_id: str
    recipient: str
    outcome: Outcome
    code: int | None = None  # SMTP reply code, if there was one
    text: str = ""  # SMTP reply text or error description

    @classmethod
    def for_message(
        cls, message: OutgoingMessage, outcome: Outcome, code: int | None = None, text: str = ""
    ) -> SendResult:
        """The result for ``message`` with the given outcome."""
        return cls(message.message_id, message.recipient, outcome, code, text)


class BackendConfigError(SendError):
    """The backend cannot work at all (wrong host, port or password).

    Raised by ``open()`` before any message is handed over, so the caller marks nothing.
    """


class BaseBackend:
    """Base class for mail backends.

    A backend knows nothing of issues or subscribers. It opens its connections, takes batches
    of ready messages and reports one :class:`SendResult` per message. Subclasses implement
    :meth:`send_messages`, and :meth:`open`/:meth:`close` if they hold connections.
    """

    #: Name used in settings (``backend = "smtp"``); set by subclasses.
    name = "base"

    def __init__(self, **options: Any) -> None:
        self.options = options

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Self:
        """Build the backend from settings; ``overrides`` are constructor keyword arguments."""
        return cls(**overrides)

    def open(self) -> None:
        """Open connections. Raise BackendConfigError if the backend cannot work at all."""

    def close(self) -> None:
        """Close connections. Safe to call more than once."""

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Hand over messages; return one result per message, in order."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
