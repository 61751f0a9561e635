"""The list headers inbox providers read: Feedback-ID, List-Archive, the unsubscribe mailto."""

from __future__ import annotations

import re
import string
from urllib.parse import quote

from digest.config import Settings
from digest.domains import domain_of, organisational_domain
from digest.errors import ConfigError
from digest.mime import MAILTO_URI_RE, MAX_URI

#: The fields a feedback_id template may use.
FEEDBACK_FIELDS = ("campaign", "issue", "list", "sender")
# Gmail's Feedback Loop splits the value at ":"; keep each field to characters that need no
# quoting in a header and cannot add a field.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_LITERAL = re.compile(r"[A-Za-z0-9._:-]*")
_ARCHIVE_RE = re.compile(r"https?://[!#-+\--;=?-\[\]-~]+", re.IGNORECASE)


def feedback_id(settings: Settings, issue: str) -> str:
    """The Feedback-ID value for an issue, e.g. ``weekly:2025-W47:weekly.example.org:example.org``.

    Gmail's Feedback Loop reports spam complaints per identifier; the last field is the sender
    id and must stay the same across campaigns. Fields: campaign (utm_campaign, else
    "newsletter"), issue (its label), list (the List-Id), sender (feedback_id_sender, else the
    From organisational domain). An empty feedback_id setting sends no header.
    """
    template = settings.feedback_id.strip()
    if not template:
        return ""
    values = {
        "campaign": settings.utm_campaign.strip() or "newsletter",
        "issue": issue,
        "list": settings.effective_list_id,
        "sender": settings.feedback_id_sender.strip()
        or organisational_domain(domain_of(settings.from_email)),
    }
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        parsed = [("{", "?", "", None)]  # unbalanced braces: refused below
    names = {name for _, name, _, _ in parsed if name is not None}
    literal = "".join(text for text, _, _, _ in parsed)
    plain = all(not spec and not conversion for _, _, spec, conversion in parsed)
    if not names <= set(FEEDBACK_FIELDS) or not plain or not _LITERAL.fullmatch(literal):
        raise ConfigError(
            f"feedback_id {template!r} may use only {{campaign}}, {{issue}}, {{list}} and "
            "{sender}, joined by colons, e.g. \"{campaign}:{issue}:{list}:{sender}\""
        )
    value = template.format(**{k: _UNSAFE.sub("-", v).strip("-") or "-"
                               for k, v in values.items()})
    if len(value) > 200:
        raise ConfigError("feedback_id is over 200 characters; use shorter fields")
    return value


def list_archive_url(settings: Settings) -> str:
    """The List-Archive URI (RFC 2369 §3.6): the web archive digest serve publishes."""
    url = settings.base_url.rstrip("/") + "/archive"
    if len(url) > MAX_URI or not url.isascii() or not _ARCHIVE_RE.fullmatch(url):
        raise ConfigError(
            f"base_url {settings.base_url!r} cannot go in a List-Archive header; set it to a "
            "plain https URL such as https://news.example.org"
        )
    return url


def unsubscribe_mailto(settings: Settings) -> str:
    """The List-Unsubscribe mailto URI with a subject (RFC 2369 §2), or "" when not set."""
    mailto = settings.list_unsubscribe_mailto.strip()
    if not mailto:
        return ""
    if not mailto.lower().startswith("mailto:"):
        mailto = "mailto:" + mailto
    if "?" not in mailto:
        # A subject lets the mailbox's reader (or a person) see what the message asks for.
        mailto += "?subject=" + quote("unsubscribe " + settings.effective_list_id, safe="")
    if len(mailto) > MAX_URI or not MAILTO_URI_RE.fullmatch(mailto):
        raise ConfigError(
            f"list_unsubscribe_mailto {settings.list_unsubscribe_mailto!r} is not a "
            "usable mailto URI; set it to an address like unsubscribe@example.com"
        )
    return mailto
