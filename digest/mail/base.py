"""The one interface every mail backend implements, and its per-recipient result."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from digest.errors import SendError


class Outcome(enum.Enum):
    """What happened to one message for one recipient."""

    SENT = "sent"
    TEMPORARY = "temporary"  # 4xx, dropped connection, timeout: retry later
    PERMANENT = "permanent"  # 5xx: do not retry


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A ready-to-send message: envelope plus the complete RFC 5322 bytes (CRLF line ends)."""

    message_id: str  # without angle brackets
    sender: str  # envelope MAIL FROM
    recipient: str  # envelope RCPT TO
    data: bytes


@dataclass(frozen=True, slots=True)
class SendResult:
    """One result per message handed to a backend, in the same order."""

    message_id: str
    recipient: str
    outcome: Outcome
    code: int | None = None  # SMTP reply code, if there was one
    text: str = ""  # SMTP reply text or error description


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

    def open(self) -> None:
        """Open connections. Raise BackendConfigError if the backend cannot work at all."""

    def close(self) -> None:
        """Close connections. Safe to call more than once."""

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Hand over messages; return one result per message, in order."""
        raise NotImplementedError

    def __enter__(self) -> BaseBackend:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
