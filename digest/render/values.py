"""Feed values made fit for display: one-line text, safe link URLs, UTM tags, short blurbs."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlencode, urlsplit, urlunsplit

from digest.config import Settings
from digest.issues import ArticleView, IssueContent

#: What the size gate shortens a dek or summary to.
SHORT_BLURB_CHARS = 200

_WS = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029]")
_LANG = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*")


_CREDIT_PREFIX = re.compile(r"^(?:photo(?:graph)?|image|picture|credit)\s*:\s*", re.IGNORECASE)


def credit_text(value: str) -> str:
    """A photo credit without its own "Photo:" label: the template adds one."""
    return _CREDIT_PREFIX.sub("", clean_text(value))


def clean_text(value: str) -> str:
    """One line of display text: control characters removed, whitespace collapsed."""
    return _WS.sub(" ", _CONTROL.sub("", value)).strip()


def link_url(value: str) -> str:
    """Return value if it is an absolute http(s) URL safe to put in a link, else ``""``.

    Stricter than :func:`digest.personalise.safe_url`: any whitespace or control character
    rejects the URL, so ``java\\tscript:`` tricks and line-breaking URLs never get through.
    """
    value = value.strip()
    if not value or _WS.search(value) or _CONTROL.search(value):
        return ""
    try:
        parts = urlsplit(value)
    except ValueError:
        return ""
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return ""
    return value


def add_utm(url: str, source: str, medium: str, campaign: str) -> str:
    """url with utm_source/medium/campaign set, other query parameters kept as written."""
    parts = urlsplit(url)
    ours = {"utm_source": source, "utm_medium": medium, "utm_campaign": campaign}
    ours = {k: v for k, v in ours.items() if v}
    kept = [p for p in parts.query.split("&") if p and p.split("=", 1)[0] not in ours]
    query = "&".join([*kept, urlencode(ours)]) if ours else parts.query
    return urlunsplit(parts._replace(query=query))


def shorten(text: str, limit: int = SHORT_BLURB_CHARS) -> str:
    """text cut to at most limit characters at a word boundary, with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:.-–—") + "…"



def format_date(content: IssueContent, settings: Settings) -> str:
    """The issue date as readers see it: the day it is sent or scheduled (issues.dated)."""
    day = content.issue_date
    if day is None:
        # Content built by hand, without a date: the window's last day (the window is
        # half-open, so a week ending Monday 00:00 is dated the Sunday before).
        day = (content.window_end - timedelta(microseconds=1)).astimezone(settings.tz).date()
    return f"{day.day} {day:%B %Y}"



def lang_tag(language: str) -> str:
    """A BCP 47 tag for the lang attribute ("en_GB" becomes "en-GB"); "en" if unusable."""
    tag = language.strip().replace("_", "-")
    return tag if _LANG.fullmatch(tag) else "en"


def blurb(article: ArticleView) -> str:
    """The line under a headline: the dek, else the summary, as clean text."""
    return clean_text(article.dek or article.summary)
