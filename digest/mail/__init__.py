"""Mail transports: one file per backend, all behind digest.mail.base.BaseBackend."""

from digest.mail.base import (
    BackendConfigError,
    BaseBackend,
    Outcome,
    OutgoingMessage,
    SendResult,
)
from digest.mail.registry import backend_class, backend_names, get_backend

__all__ = [
    "BackendConfigError",
    "BaseBackend",
    "Outcome",
    "OutgoingMessage",
    "SendResult",
    "backend_class",
    "backend_names",
    "get_backend",
]
