"""One exception tree; every message says what the user should do next."""

from __future__ import annotations


class DigestError(Exception):
    """Base of every error digest raises on purpose. The CLI prints it and exits 1."""


class ConfigError(DigestError):
    """A setting is missing or invalid."""


class InputError(DigestError):
    """A file, feed, address or option value could not be used; nothing was written."""


class NotFoundError(DigestError):
    """A named article, subscriber or issue does not exist."""


class CheckFailed(DigestError):
    """The pre-send check found errors; the issue must not go out as it is."""


class SendError(DigestError):
    """Sending could not start or continue (connection, credentials, lease)."""


class LockedError(SendError):
    """Another process holds the send lease for this issue."""


class MailboxError(DigestError):
    """The bounce mailbox cannot be reached or read (host, TLS, login or folder)."""
