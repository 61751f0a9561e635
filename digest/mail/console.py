"""Console backend: writes each message to a stream (stdout by default) for a person to read."""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from typing import TextIO

from digest.mail.base import BaseBackend, Outcome, OutgoingMessage, SendResult

SEPARATOR = "-" * 79


class ConsoleBackend(BaseBackend):
    """Write every message, with its envelope, to a text stream; every message counts as SENT."""

    name = "console"

    def __init__(self, *, stream: TextIO | None = None) -> None:
        super().__init__()
        self._stream = stream
        # One lock per backend keeps the messages of concurrent batches from interleaving.
        self._lock = threading.RLock()

    @property
    def stream(self) -> TextIO:
        """The stream written to: the one given, else the current sys.stdout."""
        # Looked up at write time so that pytest's capsys and contextlib.redirect_stdout work.
        return self._stream if self._stream is not None else sys.stdout

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Write the messages in order; return one result per message."""
        if not messages:
            return []
        with self._lock:
            return [self.write_message(message) for message in messages]

    def write_message(self, message: OutgoingMessage) -> SendResult:
        """Write one message and report it SENT."""
        stream = self.stream
        stream.write(f"MAIL FROM:<{message.sender}> RCPT TO:<{message.recipient}>\n")
        stream.write(message.data.decode("utf-8", errors="replace"))
        if not message.data.endswith(b"\n"):
            stream.write("\n")
        stream.write(SEPARATOR + "\n")
        stream.flush()
        return SendResult.for_message(message, Outcome.SENT)
