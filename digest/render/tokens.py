"""Opaque tokens: stand-ins for attribute values (mjml decodes entities there) and slots.

mjml 0.12 decodes entities in attribute values and writes them back raw, so
``alt="a&quot; onerror=&quot;x"`` comes out as ``alt="a" onerror="x"``. Untrusted text
therefore never reaches an MJML attribute: templates get opaque alphanumeric tokens for
every href, src, alt and title, and :class:`Tokens` substitutes the escaped values into
the compiled HTML. Per-recipient values stay tokens until :meth:`Tokens.splice` cuts the
markup into a :class:`~digest.personalise.SplicedTemplate`.
"""

from __future__ import annotations

import html
import re
import secrets

from digest.errors import ConfigError
from digest.personalise import Context, SplicedTemplate


class Tokens:
    """Opaque alphanumeric stand-ins for attribute values and per-recipient slots.

    A random nonce keeps a feed from forging a token by writing one into a headline.
    """

    def __init__(self, avoid: str) -> None:
        nonce = secrets.token_hex(5)
        while nonce in avoid:  # pragma: no cover - 1 in 2**40
            nonce = secrets.token_hex(5)
        self.nonce = nonce
        self.attr_values: list[str] = []
        self._attr_index: dict[str, int] = {}
        self.slots: list[tuple[str, Context]] = []
        self._attr_re = re.compile(f"dg{nonce}a([0-9]+)z")
        self.slot_re = re.compile(f"dg{nonce}s([0-9]+)z")

    def attr(self, value: str) -> str:
        """A token standing for value, HTML-escaped for a quoted attribute."""
        escaped = html.escape(value, quote=True)
        index = self._attr_index.get(escaped)
        if index is None:
            index = self._attr_index[escaped] = len(self.attr_values)
            self.attr_values.append(escaped)
        return f"dg{self.nonce}a{index}z"

    def slot(self, name: str, context: Context) -> str:
        """A token for a per-recipient value escaped for context."""
        key = (name, context)
        if key not in self.slots:
            self.slots.append(key)
        return f"dg{self.nonce}s{self.slots.index(key)}z"

    def slot_map(self, context: Context, url_context: Context) -> dict[str, str]:
        """Tokens for every Recipient field: urls in url_context, the rest in context."""
        return {
            "name": self.slot("name", context),
            "email": self.slot("email", context),
            "unsubscribe_url": self.slot("unsubscribe_url", url_context),
            "preferences_url": self.slot("preferences_url", url_context),
            "view_url": self.slot("view_url", url_context),
            "greeting": self.slot("greeting", context),
        }

    def substitute_attrs(self, markup: str) -> str:
        """Put the escaped attribute values in place of their tokens."""
        values = self.attr_values
        return self._attr_re.sub(lambda m: values[int(m.group(1))], markup)

    def splice(self, markup: str) -> SplicedTemplate:
        """Split markup at slot tokens into a SplicedTemplate."""
        pieces = self.slot_re.split(markup)
        chunks = tuple(pieces[0::2])
        slots = tuple(self.slots[int(i)] for i in pieces[1::2])
        if f"dg{self.nonce}" in "".join(chunks):
            raise ConfigError(
                "a rendering token was altered by the template or MJML; "
                "check templates_dir overrides against the shipped templates"
            )
        return SplicedTemplate(chunks=chunks, slots=slots)
