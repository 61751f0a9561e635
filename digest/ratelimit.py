"""A token bucket shared by every connection, worker and process through the send_rate row.

Senders reserve tokens in chunks (about a tenth of a second's worth), so the database sees a
handful of short transactions per second whatever the rate. A reservation may drive the
bucket below zero; the reserving sender sleeps until its debt is paid, and the next one (in
any process) queues behind it. The bucket holds at most one chunk, so a sender that starts
after a pause gets no more than one chunk early and the measured average stays at the rate.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime

from digest.db import Database
from digest.errors import InputError
from digest.models import utcnow
from digest.store import outbox

#: The bucket every ``digest send`` shares: the limit is the mail provider's, not per issue.
DEFAULT_BUCKET = "send"

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|second|m|min|minute|h|hour))?\s*$",
                   re.IGNORECASE)
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(text: str) -> float:
    """Messages per second from ``50/s``, ``3000/min``, ``100000/h`` or a bare ``50``."""
    match = _RATE.match(text)
    if not match or float(match[1]) <= 0:
        raise InputError(f"rate {text!r} is not a rate; write it like 50/s, 3000/min or 20000/h")
    unit = (match[2] or "s")[0].lower()
    return float(match[1]) / _PER[unit]


class RateLimiter:
    """Paces callers to ``rate`` messages per second across every process using the database."""

    def __init__(
        self,
        db: Database,
        rate: float,
        *,
        name: str = DEFAULT_BUCKET,
        max_chunk: int = 32,
        now: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise InputError("the send rate must be more than 0 messages per second")
        self.db = db
        self.rate = rate
        self.name = name
        #: Tokens per reservation: a tenth of a second's worth, 1 to max_chunk.
        self.chunk = max(1, min(max_chunk, int(rate / 10)))
        self._now = now
        self._sleep = sleep
        self.waited = 0.0

    def acquire(self, count: int) -> float:
        """Block until count messages may go out; returns the seconds slept."""
        if count <= 0:
            return 0.0
        with self.db.write() as session:
            wait = outbox.take_tokens(
                session, self.name, count, rate=self.rate, burst=float(self.chunk),
                now=self._now(),
            )
        if wait > 0:
            self._sleep(wait)
            self.waited += wait
        return wait

    def reset(self) -> None:
        """Empty the bucket, as if nothing had been sent for a while."""
        with self.db.write() as session:
            outbox.reset_bucket(session, self.name, now=self._now())
