"""File backend: writes one .eml file per message into a folder, atomically."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from digest.mail.base import BackendConfigError, Outcome, OutgoingMessage, SendResult
from digest.mail.console import ConsoleBackend

if TYPE_CHECKING:
    from digest.config import Settings

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]")
_MAX_STEM = 150  # well under the usual 255-byte file name limit


def eml_filename(message_id: str) -> str:
    """A safe file name for a Message-ID: no path separators, no leading dot, bounded length.

    A Message-ID that is already safe keeps its text (``abc@example.com.eml``); one that had
    to change gets a hash suffix, so two different IDs never share a file.
    """
    stem = _UNSAFE.sub("_", message_id).lstrip(".")
    if stem != message_id or not stem or len(stem) > _MAX_STEM:
        digest = hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        stem = f"{stem[:_MAX_STEM]}-{digest}" if stem else f"message-{digest}"
    return f"{stem}.eml"


class FileBackend(ConsoleBackend):
    """Write each message's exact bytes to ``<file_dir>/<Message-ID>.eml``.

    Sending a message again with the same Message-ID replaces its file, so a retried send
    never shows up twice. Each file is written to a temporary name and renamed into place,
    so a crash never leaves half a message under a ``.eml`` name.
    """

    name = "file"

    def __init__(self, *, file_dir: str | os.PathLike[str] = "outbox") -> None:
        super().__init__()
        self.file_dir = Path(file_dir)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Self:
        """Build the backend from ``settings.file_dir``."""
        options: dict[str, Any] = {"file_dir": settings.file_dir}
        options.update(overrides)
        return cls(**options)

    def open(self) -> None:
        """Create the folder if it is missing."""
        try:
            self.file_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendConfigError(
                f"cannot create the outbox folder {self.file_dir}: {exc.strerror or exc}"
                " — check DIGEST_FILE_DIR"
            ) from exc

    def write_message(self, message: OutgoingMessage) -> SendResult:
        """Write one message atomically; a failed write is TEMPORARY and leaves no file."""
        path = self.file_dir / eml_filename(message.message_id)
        try:
            self.file_dir.mkdir(parents=True, exist_ok=True)
            _write_atomically(path, message.data)
        except OSError as exc:
            return SendResult.for_message(
                message, Outcome.TEMPORARY, text=f"could not write {path}: {exc}"
            )
        return SendResult.for_message(message, Outcome.SENT, text=f"written to {path}")


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, rename it."""
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
