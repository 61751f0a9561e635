"""Per-recipient values spliced into text built once per issue variant, escaped per context.

Nothing per subscriber runs Jinja or MJML: rendering leaves *slots* in the compiled HTML and
text, and :meth:`SplicedTemplate.fill` joins literal chunks with escaped values.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

#: Where a value lands decides how it is escaped.
#: ``html``: HTML text or a quoted attribute value; ``url``: an href/src attribute holding a
#: URL (only http, https and mailto pass); ``text``: the plain-text part.
Context = Literal["html", "url", "text"]

#: Recipient values a template may splice in; ``greeting`` is derived from ``name``.
FIELDS = ("name", "email", "unsubscribe_url", "preferences_url", "view_url", "greeting")

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029]")
_LINEBREAK = re.compile(r"[\r\n]+")


@dataclass(frozen=True, slots=True)
class Recipient:
    """The values that differ between subscribers."""

    email: str
    name: str
    unsubscribe_url: str
    preferences_url: str
    view_url: str

    @property
    def greeting(self) -> str:
        """"Hello Ada," for a named subscriber; empty (no greeting at all) without a name."""
        name = self.name.strip()
        return f"Hello {name}," if name else ""


def safe_url(value: str) -> str:
    """Return value if it is an absolute http(s) or mailto URL, else ``#``."""
    value = value.strip()
    scheme = urlsplit(value).scheme.lower()
    if scheme in ("http", "https", "mailto") and not _CONTROL.search(value):
        return value
    return "#"


def escape(value: str, context: Context) -> str:
    """Escape value for the place it lands."""
    if context == "html":
        return html.escape(_LINEBREAK.sub(" ", _CONTROL.sub("", value)), quote=True)
    if context == "url":
        return html.escape(safe_url(value), quote=True)
    # Plain text: a name must not start a new line that looks like part of the email.
    return _LINEBREAK.sub(" ", _CONTROL.sub("", value))


@dataclass(frozen=True, slots=True)
class SplicedTemplate:
    """Literal chunks with slots between them: ``chunks[0] slot[0] chunks[1] ... chunks[-1]``."""

    chunks: tuple[str, ...]
    slots: tuple[tuple[str, Context], ...]  # (Recipient field, context)

    def __post_init__(self) -> None:
        if len(self.chunks) != len(self.slots) + 1:
            raise ValueError("a SplicedTemplate needs exactly one more chunk than slots")
        for field, _ in self.slots:
            if field not in FIELDS:
                raise ValueError(f"unknown personalisation field {field!r}")

    def values(self, recipient: Recipient) -> list[str]:
        """The escaped value for each slot, in order."""
        cache: dict[tuple[str, Context], str] = {}
        out = []
        for slot in self.slots:
            value = cache.get(slot)
            if value is None:
                value = cache[slot] = escape(getattr(recipient, slot[0]), slot[1])
            out.append(value)
        return out

    def fill(self, recipient: Recipient) -> str:
        """The complete personalised text."""
        chunks = self.chunks
        parts = [chunks[0]]
        for value, chunk in zip(self.values(recipient), chunks[1:], strict=True):
            parts.append(value)
            parts.append(chunk)
        return "".join(parts)

    @property
    def literal_length(self) -> int:
        """Length of the text without any personalised values."""
        return sum(len(c) for c in self.chunks)
