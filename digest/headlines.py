"""An issue's subject line and preheader text: defaults, length caps and their warnings."""

from __future__ import annotations

import re
from collections.abc import Sequence

from digest.errors import ConfigError, InputError
from digest.issues import ArticleView

#: Longer subjects are refused: no inbox shows them, and spam filters score them.
SUBJECT_MAX = 150
#: Desktop inboxes show about this many characters of a subject (phones fewer).
SUBJECT_WARN = 78
#: Inbox preview text past this is never shown.
PREHEADER_MAX = 140

_WS = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_TRAILING = " ,;:.-–—"

PLACEHOLDERS = "{newsletter}, {headline}, {more}, {and_more}, {number} and {date}"


def one_line(value: str) -> str:
    """Text on one line: control characters and runs of whitespace become single spaces."""
    return _WS.sub(" ", _CONTROL.sub(" ", value)).strip()


def shorten_words(text: str, limit: int) -> str:
    """text cut to at most limit characters at a word boundary, with an ellipsis.

    Never cuts a word in two: if even the first word does not fit, it is kept whole.
    """
    text = one_line(text)
    if len(text) <= limit:
        return text
    words = text.split(" ")
    kept = words[0]
    for word in words[1:]:
        if len(kept) + 1 + len(word) + 1 > limit:  # +1 for the ellipsis
            break
        kept += " " + word
    return kept.rstrip(_TRAILING) + "…"


def and_more(count: int) -> str:
    """" and 3 more stories", " and 1 more story", or nothing when there are none."""
    if count <= 0:
        return ""
    return f" and {count} more {'story' if count == 1 else 'stories'}"


def check_subject(subject: str, *, what: str = "the subject") -> str:
    """The subject on one line; InputError when it is empty or over SUBJECT_MAX characters."""
    text = one_line(subject)
    if len(text) > SUBJECT_MAX:
        raise InputError(
            f"{what} is {len(text)} characters; the limit is {SUBJECT_MAX} (inboxes show about "
            f"{SUBJECT_WARN}). Shorten it, e.g. to the lead headline"
        )
    return text


def subject_warning(subject: str) -> str | None:
    """A warning when inboxes will cut the subject off, else None."""
    if len(subject) > SUBJECT_WARN:
        return (f"the subject is {len(subject)} characters; inboxes show about {SUBJECT_WARN}, "
                "so readers will not see its end")
    return None


def default_subject(
    template: str, *, newsletter: str, headline: str, more: int, number: int, date: str
) -> str:
    """The subject from subject_template, with a long headline shortened at a word boundary.

    The headline is shortened only as far as needed to keep the whole subject within
    SUBJECT_WARN characters; the rest of the template is kept as written.
    """
    headline = one_line(headline)

    def fill(title: str) -> str:
        try:
            return one_line(template.format(
                newsletter=newsletter, headline=title, more=more, and_more=and_more(more),
                number=number, date=date,
            ))
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ConfigError(
                f"subject_template {template!r} is invalid ({exc}); use only {PLACEHOLDERS}"
            ) from None

    subject = fill(headline)
    if len(subject) > SUBJECT_WARN and headline and "{headline}" in template:
        room = SUBJECT_WARN - (len(fill("X")) - 1)  # "X": one_line would strip a blank
        subject = fill(shorten_words(headline, max(room, 1)))
    if len(subject) > SUBJECT_MAX:
        raise ConfigError(
            f"subject_template {template!r} makes a {len(subject)}-character subject; the "
            f"limit is {SUBJECT_MAX}. Shorten the template or newsletter_name"
        )
    return subject


def default_preheader(stories: Sequence[ArticleView]) -> str:
    """Inbox preview text from the second and third stories, so it does not repeat the subject.

    stories is the issue in reading order, lead first. With only a lead, its standfirst is
    used instead (the subject already carries its headline).
    """
    titles = [one_line(a.title) for a in stories[1:3] if one_line(a.title)]
    if titles:
        text = " · ".join(titles)
    elif stories:
        text = one_line(stories[0].dek or stories[0].summary)
    else:
        text = ""
    return shorten_words(text, PREHEADER_MAX)
