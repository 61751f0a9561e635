"""Issue rendering: Jinja2 → MJML → HTML (and plain text), compiled once per section variant.

The package is split along its seams: :mod:`.renderer` (the Renderer and its size gate),
:mod:`.plan` (which article goes where), :mod:`.tokens` (opaque stand-ins for attribute
values and per-recipient slots), :mod:`.markup` (compiled-HTML clean-up and measurement),
:mod:`.text` (the plain-text part), :mod:`.values` (feed values made fit for display) and
:mod:`.results` (what a compile produces). Import from here: these names are the interface.
"""

from digest.render.markup import ascii_html, collapse_whitespace, head_css_bytes
from digest.render.renderer import HTML_TEMPLATE, TEXT_TEMPLATE, Renderer, default_templates_dir
from digest.render.results import (
    GMAIL_CLIP_BYTES,
    GMAIL_HEAD_CSS_BYTES,
    CompiledIssue,
    RenderReport,
    personalise,
    sample_recipient,
)
from digest.render.text import TEXT_WIDTH, wrap_text
from digest.render.values import (
    SHORT_BLURB_CHARS,
    add_utm,
    clean_text,
    credit_text,
    format_date,
    link_url,
    shorten,
)

__all__ = [
    "GMAIL_CLIP_BYTES",
    "GMAIL_HEAD_CSS_BYTES",
    "HTML_TEMPLATE",
    "SHORT_BLURB_CHARS",
    "TEXT_TEMPLATE",
    "TEXT_WIDTH",
    "CompiledIssue",
    "RenderReport",
    "Renderer",
    "add_utm",
    "ascii_html",
    "clean_text",
    "collapse_whitespace",
    "credit_text",
    "default_templates_dir",
    "format_date",
    "head_css_bytes",
    "link_url",
    "personalise",
    "sample_recipient",
    "shorten",
    "wrap_text",
]
