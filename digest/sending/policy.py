"""Retry policy: when to retry a delivery (which replies are bounces: digest.mail.replies)."""

from __future__ import annotations

import random

from digest.config import Settings
from digest.mail.replies import is_bounce  # re-exported: the mail layer reads bounces

__all__ = ["JITTER", "is_bounce", "retry_delay"]

#: Retry delays vary by this fraction either way, so retries from one outage spread out.
JITTER = 0.2


def retry_delay(settings: Settings, attempts: int, *, rng: random.Random | None = None) -> float:
    """Seconds before retrying a row that has had attempts tries: base · 2^(attempts-1) ± 20 %."""
    base: float = settings.send_retry_base * 2.0 ** max(0, attempts - 1)
    return base * (1.0 + (rng or random).uniform(-JITTER, JITTER))
