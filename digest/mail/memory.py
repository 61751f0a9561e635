"""Memory backend: keeps messages in a list, for tests and for programs that embed digest."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import ClassVar

from digest.mail.base import BaseBackend, Outcome, OutgoingMessage, SendResult


class MemoryBackend(BaseBackend):
    """Append accepted messages to :attr:`outbox`, one list shared by every instance.

    Like Django's locmem backend, ``MemoryBackend.outbox`` and ``backend.outbox`` are the same
    list, so a test can inspect what any instance sent. ``replies`` scripts an SMTP reply per
    recipient (``{"bounce@example.com": (550, "no such user")}``); those messages are classified
    as the SMTP backend would and are not added to the outbox.
    """

    name = "memory"

    outbox: ClassVar[list[OutgoingMessage]] = []
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, *, replies: Mapping[str, tuple[int, str]] | None = None) -> None:
        super().__init__()
        self.replies = dict(replies or {})

    @classmethod
    def clear(cls) -> None:
        """Empty the shared outbox in place, so references to it stay valid."""
        with cls._lock:
            cls.outbox.clear()

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Keep the messages whose recipient has no scripted failure; report each one."""
        results = []
        with self._lock:
            for message in messages:
                code, text = self.replies.get(message.recipient, (250, "OK"))
                outcome = Outcome.from_smtp_code(code, text, at_rcpt=True)
                if outcome is Outcome.SENT:
                    self.outbox.append(message)
                results.append(SendResult.for_message(message, outcome, code, text))
        return results
