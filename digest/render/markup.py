"""Compiled HTML made smaller and measured: whitespace, ASCII, head CSS; the editor's note."""

from __future__ import annotations

import re

from markdown_it import MarkdownIt
from markdown_it.token import Token

from digest.render.tokens import Tokens
from digest.render.values import link_url

_PRE = re.compile(r"(<pre\b.*?</pre>)", re.IGNORECASE | re.DOTALL)
# Only whitespace that contains a line break is layout indentation from MJML or the
# templates; a single space between inline tags ("</a> <a>") is visible and stays.
_BETWEEN_TAGS = re.compile(r">[ \t\r]*\n[ \t\r\n]*<")
_NEWLINE_RUN = re.compile(r"[ \t\r]*\n[ \t\r\n]*")
_STYLE = re.compile(r"<style\b[^>]*>(.*?)</style>", re.IGNORECASE | re.DOTALL)
_HEAD = re.compile(r"<head\b.*?</head>", re.IGNORECASE | re.DOTALL)
_RAW_TEXT = re.compile(r"(<(?:style|script)\b.*?</(?:style|script)>)", re.IGNORECASE | re.DOTALL)


def collapse_whitespace(markup: str) -> str:
    """Drop MJML's layout indentation; ``<pre>`` and conditional comments keep their content."""
    parts = _PRE.split(markup)
    for i in range(0, len(parts), 2):  # even indexes are outside <pre>
        parts[i] = _NEWLINE_RUN.sub(" ", _BETWEEN_TAGS.sub("><", parts[i]))
    return "".join(parts)


def ascii_html(markup: str) -> str:
    """Non-ASCII characters as numeric references, except in <style> where they would show.

    Pure-ASCII chunks are one byte per character in CPython, so every per-recipient join
    and UTF-8 encode copies half the memory of a body holding one "…" or "“".
    """
    parts = _RAW_TEXT.split(markup)
    for i in range(0, len(parts), 2):
        if not parts[i].isascii():
            parts[i] = parts[i].encode("ascii", "xmlcharrefreplace").decode("ascii")
    return "".join(parts)


def head_css_bytes(markup: str) -> int:
    """UTF-8 bytes of every <style> block in the document head (what Gmail counts)."""
    head = _HEAD.search(markup)
    if head is None:
        return 0
    return sum(len(m.group(1).encode()) for m in _STYLE.finditer(head.group(0)))


def intro_html(text: str, tokens: Tokens) -> str:
    """The editor's note as HTML: CommonMark without raw HTML, links as opaque tokens."""
    if not text.strip():
        return ""
    md = MarkdownIt("commonmark", {"html": False})
    md.disable("image")  # a note's images would bypass the alt/size rules of articles
    stream = md.parse(text)
    for block in stream:
        children = block.children or []
        drop_next_close = []
        for i, child in enumerate(children):
            if child.type == "link_open":
                href = link_url(str(child.attrGet("href") or ""))
                if not href and str(child.attrGet("href") or "").startswith("mailto:"):
                    href = str(child.attrGet("href"))
                if href:
                    child.attrs = {"href": tokens.attr(href)}
                    drop_next_close.append(False)
                else:
                    children[i] = Token("text", "", 0, content="")
                    drop_next_close.append(True)
            elif child.type == "link_close" and drop_next_close and drop_next_close.pop():
                children[i] = Token("text", "", 0, content="")
    # markdown-it escapes all text itself, so its output is safe markup.
    return str(md.renderer.render(stream, md.options, {}))
