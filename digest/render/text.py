"""The plain-text part: lines wrapped for mail readers, URLs never broken."""

from __future__ import annotations

import re
import textwrap

#: Plain-text line width (RFC 3676 suggests 78).
TEXT_WIDTH = 78


def wrap_text(text: str, width: int = TEXT_WIDTH) -> str:
    """Wrap every line longer than width, keeping its indent; URLs are never broken."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.rstrip()
        if len(line) <= width:
            out.append(line)
            continue
        prefix = re.match(r"\s*(?:[*-] )?", line)
        lead = prefix.group(0) if prefix else ""
        out.extend(
            textwrap.wrap(
                line[len(lead) :],
                width=width,
                initial_indent=lead,
                subsequent_indent=" " * len(lead),
                break_long_words=False,  # a URL longer than a line stays whole
                break_on_hyphens=False,  # and is never split at its hyphens
            )
        )
    joined = re.sub(r"\n{3,}", "\n\n", "\n".join(out))
    return joined.strip("\n") + "\n"
