"""SMTP replies read as facts about the recipient: which permanent refusals mean a dead address."""

from __future__ import annotations

import re

# RFC 3463 §3.3 X.1.x addressing status: 5.1.1 bad mailbox, 5.1.2 bad system (domain),
# 5.1.3 bad address syntax, 5.1.6 mailbox has moved, 5.1.10 null MX (RFC 7505). 5.1.7 and
# 5.1.8 are about the *sender's* address and say nothing about the subscriber.
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_BAD_MAILBOX_DETAILS = frozenset({1, 2, 3, 6, 10})
_UNKNOWN_USER = re.compile(
    r"user unknown|unknown user|no such (user|mailbox|recipient)|does not exist|"
    r"mailbox (not found|unavailable)|invalid (recipient|mailbox|address)|"
    r"recipient (address )?rejected|undeliverable address",
    re.IGNORECASE,
)


def is_bounce(code: int | None, text: str) -> bool:
    """True if a permanent reply says the address does not exist (so the subscriber bounced).

    An RFC 3463 enhanced status code decides when present (5.1.1 yes, 5.7.1 policy no);
    otherwise 551 and 553 (RFC 5321 §4.2.2: user not local, mailbox name not allowed) do, and
    550 only with a "user unknown"-like text, since 550 is also used for policy refusals.
    """
    if code not in (550, 551, 553):
        return False
    enhanced = _ENHANCED.search(text or "")
    if enhanced:
        return enhanced[1] == "5" and enhanced[2] == "1" and (
            int(enhanced[3]) in _BAD_MAILBOX_DETAILS
        )
    return code in (551, 553) or bool(_UNKNOWN_USER.search(text or ""))
