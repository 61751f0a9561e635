"""Subject and preheader text: word-boundary shortening, "and N more", the caps."""

from __future__ import annotations

import pytest

from digest.errors import ConfigError, InputError
from digest.headlines import (
    SUBJECT_WARN,
    and_more,
    check_subject,
    default_preheader,
    default_subject,
    shorten_words,
)
from tests.conftest import make_article


def test_shortening_never_cuts_a_word() -> None:
    text = "Insurers return to the grain corridor, at a price"
    words = text.split(" ")
    for limit in range(len(words[0]) + 1, len(text)):
        short = shorten_words(text, limit)
        assert len(short) <= limit and short.endswith("…")
        kept = short.removesuffix("…").split(" ")
        assert kept[:-1] == words[: len(kept) - 1]
        assert kept[-1] == words[len(kept) - 1].rstrip(",")  # whole, less its comma
    assert shorten_words("Supercalifragilistic words", 5) == "Supercalifragilistic…"
    assert shorten_words(text, 200) == text


def test_and_more_counts_stories_and_says_nothing_for_none() -> None:
    assert (and_more(0), and_more(1), and_more(7)) == (
        "", " and 1 more story", " and 7 more stories")


def test_default_subject_keeps_the_template_and_shortens_the_headline() -> None:
    headline = "word " * 30
    subject = default_subject("{headline}{and_more}", newsletter="N", headline=headline,
                              more=12, number=1, date="1 December 2025")
    assert subject.endswith("… and 12 more stories") and len(subject) <= SUBJECT_WARN
    with pytest.raises(ConfigError, match="limit is 150"):
        default_subject("x" * 151 + "{headline}", newsletter="N", headline="h", more=0,
                        number=1, date="")
    with pytest.raises(ConfigError, match="use only"):
        default_subject("{nope}", newsletter="N", headline="h", more=0, number=1, date="")


def test_an_override_over_150_characters_is_refused() -> None:
    assert check_subject("  Ferries\r\nand frost ") == "Ferries and frost"
    with pytest.raises(InputError, match="562 characters; the limit is 150"):
        check_subject("x" * 562)


def test_preheader_skips_the_lead() -> None:
    lead, second, third, fourth = (make_article(i, "Europe", i) for i in range(1, 5))
    assert default_preheader([lead, second, third, fourth]) == f"{second.title} · {third.title}"
    alone = default_preheader([lead])  # the subject has the headline: use the standfirst
    assert alone.endswith("…") and lead.dek.startswith(alone.removesuffix("…"))
    assert default_preheader([]) == ""
