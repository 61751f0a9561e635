"""The templates' view of an article: clean text, a date, tokens for every HTML attribute."""

from __future__ import annotations

from dataclasses import dataclass

from digest.config import Settings
from digest.issues import ArticleView
from digest.render.tokens import Tokens
from digest.render.values import add_utm, blurb, clean_text, credit_text, link_url, shorten


@dataclass(frozen=True, slots=True)
class Story:
    """An article prepared for the templates: clean text, tokens for the HTML attributes."""

    id: int
    title: str
    section: str
    author: str
    blurb: str
    date: str  # the publication day in the publication's time zone, "20 Nov 2025"
    url: str  # validated http(s) URL with UTM parameters, for the text part; "" if unusable
    href: str  # token for the HTML href, or ""
    image_src: str  # token, or "" when there is no usable image
    image_alt: str  # token
    image_width: int  # the photo's own size (feed metadata, else the image_* settings)
    image_height: int
    credit: str


def article_date(article: ArticleView, settings: Settings) -> str:
    """The day an article was published, as readers of this publication count days."""
    day = article.published_at.astimezone(settings.tz).date()
    return f"{day.day} {day:%b %Y}"


def make_story(
    article: ArticleView, settings: Settings, tokens: Tokens, *, campaign: str, short: bool
) -> Story:
    """article as the templates see it; short cuts its dek to the size gate's length."""
    url = link_url(article.url)
    if url and settings.utm_source:
        url = add_utm(url, settings.utm_source, settings.utm_medium,
                      settings.utm_campaign or campaign)
    title = clean_text(article.title) or "Untitled"
    line = blurb(article)
    if short:
        line = shorten(line)
    image = link_url(article.image_url)
    # A linked image's alt text names the link; fall back to the headline.
    alt = clean_text(article.image_alt) or title
    known = article.image_width > 0 and article.image_height > 0
    return Story(
        id=article.id,
        title=title,
        section=clean_text(article.section),
        author=clean_text(article.author),
        blurb=line,
        date=article_date(article, settings),
        url=url,
        href=tokens.attr(url) if url else "",
        image_src=tokens.attr(image) if image else "",
        image_alt=tokens.attr(alt) if image else "",
        image_width=article.image_width if known else settings.image_width,
        image_height=article.image_height if known else settings.image_height,
        credit=credit_text(article.image_credit),
    )


def height_for(story: Story, width: int) -> int:
    """The photo's height when shown width pixels wide, keeping its proportions."""
    return max(1, round(width * story.image_height / story.image_width))
