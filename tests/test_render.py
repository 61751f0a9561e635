"""Rendering: the compiled HTML/text hold every story, stay safe with hostile feeds, fit the
size budget, and personalise by splicing escaped values into output compiled once."""

from __future__ import annotations

import dataclasses
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

import digest.render.renderer as renderer_module
from digest.config import Settings
from digest.errors import ConfigError
from digest.issues import ArticleView, IssueContent, SectionBlock
from digest.personalise import Recipient
from digest.render import (
    CompiledIssue,
    Renderer,
    add_utm,
    collapse_whitespace,
    default_templates_dir,
    link_url,
    personalise,
    sample_recipient,
    shorten,
    wrap_text,
)
from tests.conftest import make_article, make_issue_content
from tests.demo_issue import DEMO_RECIPIENT, demo_content, demo_settings

VOID = {"img", "meta", "br", "hr", "link", "input", "col", "area", "base", "source", "wbr"}
#: Classes the templates put on the parts a reader sees; the outline records their text.
KINDS = (
    "dg-masthead",
    "dg-dateline",
    "dg-section-label",
    "dg-headline",
    "dg-more-headline",
    "dg-credit",
    "dg-author",
    "dg-blurb",
    "dg-greeting",
    "dg-reason",
    "dg-forwarded",
    "dg-address",
)

RECIPIENT = Recipient(
    email="reader@example.net",
    name="Ada",
    unsubscribe_url="https://news.example.org/unsubscribe/tok123",
    preferences_url="https://news.example.org/preferences/tok123",
    view_url="https://news.example.org/view/47?s=tok123",
)


class Outline(HTMLParser):
    """Parsed HTML: every element with its attributes, and the visible parts in order."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.events: list[tuple[str, str, str]] = []  # (kind, text, first href inside)
        self._stack: list[tuple[str, str | None, list[str], list[str]]] = []
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.elements.append((tag, values))
        if tag == "a":
            for _, _, _, hrefs in self._stack:
                hrefs.append(values.get("href", ""))
        if tag in VOID:
            return
        classes = values.get("class", "").split()
        kind = next((k for k in KINDS if k in classes), None)
        self._stack.append((tag, kind, [], []))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        while self._stack:
            open_tag, kind, texts, hrefs = self._stack.pop()
            if kind:
                text = " ".join("".join(texts).split())
                self.events.append((kind, text, hrefs[0] if hrefs else ""))
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, _, texts, _ in self._stack:
            texts.append(data)

    def of(self, kind: str) -> list[str]:
        return [text for k, text, _ in self.events if k == kind]

    def attrs(self, tag: str, name: str) -> list[str]:
        return [values[name] for t, values in self.elements if t == tag and name in values]

    def shape(self) -> set[tuple[str, str]]:
        """Every (element, attribute name) pair: what hostile input must not extend."""
        pairs = {(tag, "") for tag, _ in self.elements}
        pairs |= {(tag, name) for tag, values in self.elements for name in values}
        return pairs


def grouped(outline: Outline) -> list[tuple[str, list[tuple[str, str]]]]:
    """Section labels with the (headline, href) pairs under them, in document order; a
    headline before the first label (the cards layout's lead story) is under "Lead"."""
    groups: list[tuple[str, list[tuple[str, str]]]] = []
    for kind, text, href in outline.events:
        if kind == "dg-section-label":
            groups.append((text, []))
        elif kind in ("dg-headline", "dg-more-headline"):
            if not groups:
                groups.append(("Lead", []))
            groups[-1][1].append((text, href))
    return groups


def lead_headlines(outline: Outline) -> int:
    """How many headlines are set as the lead story."""
    return sum("dg-lead-headline" in v.get("class", "").split() for _, v in outline.elements)


def focusable_hrefs(markup: str) -> list[str]:
    """hrefs of the links a keyboard user tabs through, in order."""
    outline = Outline(markup)
    return [
        values.get("href", "") for tag, values in outline.elements
        if tag == "a" and values.get("tabindex") != "-1"
    ]


def body_of(compiled: CompiledIssue, recipient: Recipient = RECIPIENT) -> Outline:
    return Outline(personalise(compiled, recipient)[0])


# --------------------------------------------------------------------------- content


def test_every_headline_and_link_sits_under_its_section_in_order(
    render_settings: Settings, issue_content: IssueContent
) -> None:
    """The default cards layout: the lead story first, then the rest of each section."""
    compiled = Renderer(render_settings).compile(issue_content)
    outline = body_of(compiled)

    lead, *rest = issue_content.sections[0].articles
    expected = [("Lead", [(lead.title, lead.url)])]
    expected.append((issue_content.sections[0].name, [(a.title, a.url) for a in rest]))
    expected += [
        (s.name, [(a.title, a.url) for a in s.articles]) for s in issue_content.sections[1:]
    ]
    expected.append(("More stories", [(a.title, a.url) for a in issue_content.more]))
    assert grouped(outline) == expected
    assert lead_headlines(outline) == 1
    hrefs = outline.attrs("a", "href")
    focusable = focusable_hrefs(personalise(compiled, RECIPIENT)[0])
    for section in issue_content.sections:
        for article in section.articles:
            # Photo and headline link to the article; only the headline is in the tab order.
            assert hrefs.count(article.url) == 2
            assert focusable.count(article.url) == 1
    for article in issue_content.more:
        assert focusable.count(article.url) == 1
    assert compiled.sections == tuple(s.name for s in issue_content.sections)


def test_full_layout_keeps_every_article_in_its_section_with_a_photo_and_button(
    render_settings: Settings, issue_content: IssueContent
) -> None:
    settings = dataclasses.replace(render_settings, layout="full")
    compiled = Renderer(settings).compile(issue_content)
    body = personalise(compiled, RECIPIENT)[0]
    outline = Outline(body)

    expected = [(s.name, [(a.title, a.url) for a in s.articles]) for s in issue_content.sections]
    expected.append(("More stories", [(a.title, a.url) for a in issue_content.more]))
    assert grouped(outline) == expected
    assert lead_headlines(outline) == 0
    focusable = focusable_hrefs(body)
    images = [values for tag, values in outline.elements if tag == "img"]
    assert {img["width"] for img in images} == {"600"}
    assert {img["height"] for img in images} == {"338"}  # 1200x675 photos at 600 px
    for section in issue_content.sections:
        for article in section.articles:
            # Photo, headline and "Read more" all link; keyboard users meet the story once.
            assert outline.attrs("a", "href").count(article.url) == 3
            assert focusable.count(article.url) == 1
    buttons = [v for t, v in outline.elements if t == "a" and "dg-button" in v.get("class", "")]
    assert buttons and all(v["aria-hidden"] == "true" for v in buttons)


def test_credits_alt_text_authors_and_deks_are_shown(
    render_settings: Settings, issue_content: IssueContent
) -> None:
    outline = body_of(Renderer(render_settings).compile(issue_content))
    articles = [a for s in issue_content.sections for a in s.articles]

    # The cards layout credits the lead photo; thumbnails carry no credit line.
    assert outline.of("dg-credit") == [f"Photo: {articles[0].image_credit}"]
    assert outline.of("dg-blurb") == [a.dek for a in articles]
    assert outline.of("dg-author")[: len(articles)] == [
        f"By {a.author} · {a.published_at:%-d %b %Y}" for a in articles
    ]
    images = [values for tag, values in outline.elements if tag == "img"]
    assert [img["alt"] for img in images] == [a.image_alt for a in articles]
    assert [img["src"] for img in images] == [a.image_url for a in articles]
    # Real sizes, never height="auto": the lead at 600 px, thumbnails at 160 px (16:9).
    assert [(img["width"], img["height"]) for img in images] == (
        [("600", "338")] + [("160", "90")] * (len(articles) - 1)
    )


def test_missing_alt_text_falls_back_to_the_headline(render_settings: Settings) -> None:
    article = make_article(1, "Europe", image_alt="")
    content = make_issue_content(sections=(), more=0)
    content = dataclasses.replace(content, sections=(SectionBlock("Europe", (article,)),))

    outline = body_of(Renderer(render_settings).compile(content))

    assert outline.attrs("img", "alt") == [article.title]


def test_header_footer_lang_dark_mode_and_preheader(
    render_settings: Settings, issue_content: IssueContent
) -> None:
    compiled = Renderer(render_settings).compile(issue_content)
    body = personalise(compiled, RECIPIENT)[0]
    outline = Outline(body)

    assert outline.attrs("html", "lang") == ["en"]
    assert ("meta", {"content": "light dark", "name": "color-scheme"}) in outline.elements
    assert "@media (prefers-color-scheme: dark)" in body
    assert outline.of("dg-masthead") == ["The Example Weekly"]
    assert outline.of("dg-dateline") == ["Issue 47 · 21 November 2025"]
    assert body.isascii()  # non-ASCII as character references: cheaper joins and encodes
    assert outline.of("dg-greeting") == ["Hello Ada,"]
    assert outline.of("dg-forwarded") == ["Forwarded this? Subscribe to The Example Weekly"]
    assert "https://news.example.org/subscribe" in outline.attrs("a", "href")
    assert outline.of("dg-reason") == [
        "You are receiving this because you subscribed to The Example Weekly at reader@example.net."
    ]
    assert outline.of("dg-address") == ["1 Example Street, Springfield 12345"]
    hrefs = outline.attrs("a", "href")
    assert RECIPIENT.view_url in hrefs
    assert RECIPIENT.unsubscribe_url in hrefs
    assert RECIPIENT.preferences_url in hrefs
    top = [a.title for a in issue_content.sections[0].articles]
    # The preheader carries the second and third stories: the subject has the lead's.
    assert compiled.preheader == f"{top[1]} · {top[2]}"
    assert top[0] in compiled.subject and top[0] not in compiled.preheader
    assert top[1] in body.split("<body", 1)[1][:2000]  # the hidden preview div opens the body


def test_language_setting_reaches_the_document(render_settings: Settings) -> None:
    settings = dataclasses.replace(render_settings, language="pt-BR")
    body = personalise(Renderer(settings).compile(make_issue_content()), RECIPIENT)[0]
    assert Outline(body).attrs("html", "lang") == ["pt-BR"]

    bogus = dataclasses.replace(render_settings, language='en" onload="x')
    body = personalise(Renderer(bogus).compile(make_issue_content()), RECIPIENT)[0]
    assert Outline(body).attrs("html", "lang") == ["en"]


def test_editor_note_is_markdown_without_raw_html(render_settings: Settings) -> None:
    content = make_issue_content(
        intro="A **bold** week.\n\n<script>alert(1)</script> [ok](https://news.example.org/a?x=1&y=2)"
        " [bad](javascript:alert(1)) [worse](JAVASCRIPT:alert(1)) ![img](https://x.example/i.png)"
    )
    compiled = Renderer(render_settings).compile(content)
    outline = body_of(compiled)

    assert ("strong", {}) in outline.elements
    assert ("script", {}) not in outline.elements
    assert "https://news.example.org/a?x=1&y=2" in outline.attrs("a", "href")
    assert not any("javascript" in h.lower() for h in outline.attrs("a", "href"))
    assert "https://x.example/i.png" not in outline.attrs("img", "src")
    assert "<script>alert(1)</script>" in personalise(compiled, RECIPIENT)[1]  # text: as written


def test_article_without_usable_link_is_shown_without_one(render_settings: Settings) -> None:
    article = make_article(7, "Europe", url="ftp://files.example.org/x")
    content = make_issue_content(sections=(), more=0)
    content = dataclasses.replace(content, sections=(SectionBlock("Europe", (article,)),))

    compiled = Renderer(render_settings).compile(content)
    outline = body_of(compiled)

    assert outline.of("dg-headline") == [article.title]
    assert "ftp://files.example.org/x" not in outline.attrs("a", "href")
    assert compiled.report.unlinked == (7,)


# --------------------------------------------------------------------------- hostile input

HOSTILE = '"><img src=x onerror=alert(1)>'
HOSTILE_NO_SPACE = '"><svg/onload=alert(1)>'
HOSTILE_URLS = (
    "javascript:alert(1)",
    "JAVASCRIPT:alert(1)",
    " java\tscript:alert(1)",
    "\x01javascript:alert(1)",
    'https://ok.example.org/a" onmouseover="alert(1)',
    "data:text/html,<script>alert(1)</script>",
    "//evil.example.org/x",
)


def hostile_issue() -> IssueContent:
    articles = [
        make_article(
            i + 1,
            'Eu"rope <script>',
            i,
            title=f"{HOSTILE}<script>alert({i})</script>'\"",
            author="' onmouseover='alert(1)",
            dek='a&quot; onerror=&quot;x <b onclick="y">',
            image_alt=f'a" onerror="alert({i})" x="{HOSTILE}',
            image_credit="<script>alert('credit')</script>\" onerror=\"x",
            url=url,
            image_url=HOSTILE_URLS[(i + 1) % len(HOSTILE_URLS)],
        )
        for i, url in enumerate(HOSTILE_URLS)
    ]
    # Same hostile text with usable URLs, so links and images exist to attack through.
    linked = [
        make_article(
            20 + i,
            'Eu"rope <script>',
            i,
            title=f"{HOSTILE}<script>alert({i})</script>",
            image_alt=f'a" onerror="alert({i})',
            image_credit=HOSTILE,
            url=f"https://news.example.org/x?a=1&b={HOSTILE_NO_SPACE}",
            image_url=f"https://img.example.org/p.jpg?a=1&b={HOSTILE_NO_SPACE}",
        )
        for i in range(2)
    ]
    more = [make_article(40, "Asia", 0, title=HOSTILE, url=HOSTILE_URLS[0])]
    base = make_issue_content(
        intro=f"{HOSTILE} [x](javascript:alert(1)) <img src=x onerror=alert(1)>",
        preheader=HOSTILE,
    )
    return dataclasses.replace(
        base,
        sections=(SectionBlock('Eu"rope <script>', tuple(articles + linked)),),
        more=tuple(more),
    )


def assert_harmless(outline: Outline) -> None:
    tags = {tag for tag, _ in outline.elements}
    assert "script" not in tags
    for tag, values in outline.elements:
        for name, value in values.items():
            assert not name.startswith("on"), (tag, name, value)
            assert "javascript:" not in "".join(value.split()).lower(), (tag, name, value)
            assert "data:text" not in value.lower(), (tag, name, value)


@pytest.mark.parametrize("layout", ["cards", "full"])
def test_hostile_feed_content_adds_no_elements_or_attributes(
    render_settings: Settings, layout: str
) -> None:
    hostile_settings = dataclasses.replace(
        render_settings, newsletter_name=f"Weekly {HOSTILE}", postal_address=HOSTILE,
        layout=layout,
    )
    plain = make_issue_content(intro="A [link](https://a.example/).")
    no_photo = make_article(99, "Europe", 5, image_url="")
    plain = dataclasses.replace(plain, sections=(
        dataclasses.replace(plain.sections[0], articles=(*plain.sections[0].articles, no_photo)),
        *plain.sections[1:],
    ))
    benign = body_of(Renderer(hostile_settings).compile(plain))
    compiled = Renderer(hostile_settings).compile(hostile_issue())
    outline = body_of(compiled)

    assert_harmless(outline)
    assert outline.shape() <= benign.shape()
    # Images survive only with their http(s) URL; alt text is the exact hostile string.
    assert outline.attrs("img", "alt") == ['a" onerror="alert(0)', 'a" onerror="alert(1)']
    assert (
        outline.attrs("img", "src")
        == [f"https://img.example.org/p.jpg?a=1&b={HOSTILE_NO_SPACE}"] * 2
    )
    assert f"https://news.example.org/x?a=1&b={HOSTILE_NO_SPACE}" in outline.attrs("a", "href")
    # Text content reads exactly as the feed wrote it, escaped rather than dropped.
    assert f"{HOSTILE}<script>alert(0)</script>'\"" in outline.of("dg-headline")
    if layout == "full":  # the cards layout credits only the lead's photo
        assert f"Photo: {HOSTILE}" in outline.of("dg-credit")
    assert outline.of("dg-section-label")[0] == 'Eu"rope <script>'
    # Unusable links are dropped, not rewritten.
    assert set(compiled.report.unlinked) == {1, 2, 3, 4, 5, 6, 7, 40}
    assert compiled.subject.endswith(" and 9 more stories") and "\n" not in compiled.subject


def test_hostile_content_in_the_text_part_stays_plain(render_settings: Settings) -> None:
    text = personalise(Renderer(render_settings).compile(hostile_issue()), RECIPIENT)[1]
    assert f"{HOSTILE}<script>alert(0)</script>'\"" in text
    assert "javascript:" not in text.replace("[x](javascript:alert(1))", "")
    assert 'a&quot; onerror=&quot;x <b onclick="y">' in text  # exactly as the feed wrote it
    assert "&amp;" not in text and "&lt;" not in text


def test_a_headline_that_looks_like_a_token_stays_literal(render_settings: Settings) -> None:
    fake = "dg0123456789a0z dg0123456789s0z"
    article = make_article(1, "Europe", title=fake, image_alt=fake)
    content = dataclasses.replace(
        make_issue_content(sections=(), more=0), sections=(SectionBlock("Europe", (article,)),)
    )
    outline = body_of(Renderer(render_settings).compile(content))
    assert outline.of("dg-headline") == [fake]
    assert outline.attrs("img", "alt") == [fake]


# --------------------------------------------------------------------------- personalisation


def test_personalised_values_are_escaped_for_each_context(
    render_settings: Settings, issue_content: IssueContent
) -> None:
    nasty = "<b>\"x'&"
    recipient = Recipient(
        email=nasty,
        name=nasty,
        unsubscribe_url='https://news.example.org/u?a=1&b=<2>"',
        preferences_url=" JAVASCRIPT:alert(1)",
        view_url="java\tscript:alert(1)",
    )
    compiled = Renderer(render_settings).compile(issue_content)
    body, text = personalise(compiled, recipient)
    outline = Outline(body)

    assert "<b>" not in body.split("<body", 1)[1]
    assert "&lt;b&gt;&quot;x&#x27;&amp;" in body  # HTML text and attribute escaping
    assert outline.of("dg-greeting") == [f"Hello {nasty},"]  # ... and it reads back exactly
    assert f"Unsubscribe {nasty}" in outline.attrs("a", "title")
    assert ("b", {}) not in outline.elements
    assert 'https://news.example.org/u?a=1&b=<2>"' in outline.attrs("a", "href")
    # javascript: URLs (any case, tab-split) are neutralised to "#".
    assert_harmless(outline)
    assert outline.attrs("a", "href").count("#") >= 2
    # The text part carries the raw values: it is not HTML.
    assert f"Hello {nasty}," in text
    assert f"\n{nasty}.\n" in text


def test_line_breaks_in_a_name_cannot_forge_text_lines(
    render_settings: Settings, issue_content: IssueContent
) -> None:
    recipient = dataclasses.replace(RECIPIENT, name="Ada\r\nUnsubscribe: https://evil.example/")
    text = personalise(Renderer(render_settings).compile(issue_content), recipient)[1]
    assert "Hello Ada Unsubscribe: https://evil.example/" in text
    assert "\nUnsubscribe: https://evil.example/" not in text


def test_slots_cover_every_recipient_field_in_both_parts(
    render_settings: Settings, issue_content: IssueContent
) -> None:
    compiled = Renderer(render_settings).compile(issue_content)
    assert {f for f, _ in compiled.html.slots} == {
        "greeting",
        "email",
        "unsubscribe_url",
        "preferences_url",
        "view_url",
    }
    assert ("unsubscribe_url", "url") in compiled.html.slots
    assert ("email", "html") in compiled.html.slots
    assert {c for _, c in compiled.text.slots} == {"text"}
    # Nothing left over from the tokens in the literal chunks.
    assert not re.search(r"dg[0-9a-f]{10}[as][0-9]+z", "".join(compiled.html.chunks))
    assert not re.search(r"dg[0-9a-f]{10}[as][0-9]+z", "".join(compiled.text.chunks))


# --------------------------------------------------------------------------- variants, caching


def test_section_variant_contains_only_its_sections(
    render_settings: Settings, issue_content: IssueContent
) -> None:
    renderer = Renderer(render_settings)
    compiled = renderer.compile(issue_content, frozenset({"asia-pacific", "Europe"}))
    outline = body_of(compiled)

    groups = grouped(outline)
    assert [name for name, _ in groups] == ["Lead", "Europe", "Asia-Pacific", "More stories"]
    wanted = {"Europe", "Asia-Pacific"}
    shown = [a for s in issue_content.sections if s.name in wanted for a in s.articles]
    more = [a for a in issue_content.more if a.section in wanted]
    assert groups[-1][1] == [(a.title, a.url) for a in more]
    assert compiled.article_ids == tuple(a.id for a in shown + more)
    text = personalise(compiled, RECIPIENT)[1]
    assert "LATIN AMERICA" not in text
    for article in issue_content.sections[1].articles:
        assert article.title not in text
    assert compiled.subject.endswith(f"and {len(shown) + len(more) - 1} more stories")


def test_compile_runs_once_per_distinct_section_set(
    render_settings: Settings, issue_content: IssueContent, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = renderer_module.mjml_to_html

    def counting(source: str) -> object:
        calls.append(1)
        return real(source)

    monkeypatch.setattr(renderer_module, "mjml_to_html", counting)
    renderer = Renderer(render_settings)

    full = renderer.compile(issue_content)
    assert renderer.compile(issue_content, None) is full
    assert renderer.compile(issue_content, frozenset()) is full
    every = {s.name for s in issue_content.sections}
    assert renderer.compile(issue_content, frozenset(every)) is full
    europe = renderer.compile(issue_content, frozenset({"Europe"}))
    assert renderer.compile(issue_content, {"europe"}) is europe
    assert renderer.compile(issue_content, ["Europe", "No Such Section"]) is europe
    assert len(calls) == 2
    assert renderer.mjml_compiles == 2


def test_unknown_sections_give_an_empty_variant(
    render_settings: Settings, issue_content: IssueContent
) -> None:
    renderer = Renderer(render_settings)
    compiled = renderer.compile(issue_content, {"Sport"})
    assert compiled.is_empty
    assert compiled.variant == frozenset({"sport"})
    # The key means "nothing" when passed back, never "everything".
    assert renderer.compile(issue_content, compiled.variant) is compiled


@pytest.mark.parametrize(
    "choice",
    [
        None,
        [],
        ["Europe"],
        ["EUROPE", "asia-pacific"],
        ["Sport"],
        ["Sport", "Europe"],
        ["Europe", "Latin America", "Asia-Pacific", "Military Industrial Complex"],
    ],
)
def test_variant_keys_are_stable_when_passed_back(
    render_settings: Settings, issue_content: IssueContent, choice: list[str] | None
) -> None:
    renderer = Renderer(render_settings)
    key = renderer.variant_key(issue_content, choice)
    assert renderer.variant_key(issue_content, key) == key
    assert renderer.compile(issue_content, key) is renderer.compile(issue_content, choice)


# --------------------------------------------------------------------------- subject, UTM


def test_subject_from_template_and_override(render_settings: Settings) -> None:
    content = make_issue_content(per_section=2, more=1)
    settings = dataclasses.replace(
        render_settings, subject_template="#{number} {date}: {headline} (+{more}) · {newsletter}"
    )
    assert content.sections[0].articles[0].title == (
        "Harbour towns bet on ferries as rail strikes drag on")
    # Over 78 characters in all, so the headline (only) is shortened at a word boundary.
    assert Renderer(settings).compile(content).subject == (
        "#47 21 November 2025: Harbour towns bet on ferries… (+8) · The Example Weekly"
    )
    custom = dataclasses.replace(content, subject="Special\r\nBcc: x@example.com", preheader="Hi")
    compiled = Renderer(settings).compile(custom)
    assert compiled.subject == "Special Bcc: x@example.com"
    assert compiled.preheader == "Hi"

    broken = dataclasses.replace(render_settings, subject_template="{nope}")
    with pytest.raises(ConfigError, match="subject_template"):
        Renderer(broken).compile(content)


def test_utm_parameters_are_added_to_article_links_only(render_settings: Settings) -> None:
    settings = dataclasses.replace(render_settings, utm_source="digest", utm_medium="email")
    article = make_article(1, "Europe", url="https://news.example.org/a?ref=x&utm_source=old#top")
    content = dataclasses.replace(
        make_issue_content(sections=(), more=0), sections=(SectionBlock("Europe", (article,)),)
    )
    compiled = Renderer(settings).compile(content)
    body, text = personalise(compiled, RECIPIENT)
    expected = (
        "https://news.example.org/a?ref=x&utm_source=digest&utm_medium=email"
        "&utm_campaign=2025-W47#top"
    )
    hrefs = Outline(body).attrs("a", "href")
    assert hrefs.count(expected) == 2  # photo and headline
    assert expected in text
    assert RECIPIENT.unsubscribe_url in hrefs  # per-recipient links are left alone


def test_add_utm_and_link_url() -> None:
    assert add_utm("https://a.example/p", "s", "m", "c") == (
        "https://a.example/p?utm_source=s&utm_medium=m&utm_campaign=c"
    )
    assert add_utm("https://a.example/p?q=a%20b&x", "s", "", "c") == (
        "https://a.example/p?q=a%20b&x&utm_source=s&utm_campaign=c"
    )
    for bad in (*HOSTILE_URLS, "", "mailto:a@example.org", "https://", "http://a b.example/"):
        assert link_url(bad) == "", bad
    assert link_url("  https://a.example/x?y=1  ") == "https://a.example/x?y=1"


# --------------------------------------------------------------------------- size gate


def test_size_gate_trims_an_oversized_issue_under_budget(render_settings: Settings) -> None:
    content = make_issue_content(per_section=20, more=0, long_summaries=True)
    assert content.article_count == 80
    compiled = Renderer(render_settings).compile(content)
    report = compiled.report
    body, text = personalise(compiled, RECIPIENT)

    assert report.html_bytes <= render_settings.html_size_budget
    assert len(body.encode()) <= render_settings.html_size_budget
    assert not report.over_budget
    assert report.shortened and report.moved_to_more
    assert report.compiles > 1
    outline = Outline(body)
    # Each section keeps its top story; the lowest-ranked ones moved to "more stories".
    for section in content.sections:
        assert section.articles[0].title in outline.of("dg-headline")
        assert section.articles[-1].id in report.moved_to_more + report.dropped
    more_titles = outline.of("dg-more-headline")
    moved_shown = [i for i in report.moved_to_more if i not in report.dropped]
    assert len(more_titles) == len(moved_shown)
    for blurb in outline.of("dg-blurb"):
        assert len(blurb) <= 200 and blurb.endswith("…")
    if report.dropped:
        assert RECIPIENT.view_url in Outline(body).attrs("a", "href")
    assert any("More stories" in line for line in report.describe())
    assert text.count("\n* ") == len(more_titles) + (1 if report.dropped else 0)


def test_size_gate_leaves_a_normal_issue_alone(
    render_settings: Settings, issue_content: IssueContent
) -> None:
    report = Renderer(render_settings).compile(issue_content).report
    assert report.compiles == 1
    assert not report.trimmed
    assert report.describe() == []
    assert report.html_bytes < report.uncollapsed_html_bytes
    assert report.collapse_saving > 10_000
    assert 0 < report.head_css_bytes < 16_384


def test_size_gate_shortens_before_moving(render_settings: Settings) -> None:
    content = make_issue_content(per_section=3, more=0, long_summaries=True)
    base = Renderer(render_settings).compile(content).report.html_bytes
    tight = dataclasses.replace(render_settings, html_size_budget=base - 1000)
    report = Renderer(tight).compile(content).report
    assert report.shortened and not report.moved_to_more
    assert report.html_bytes <= tight.html_size_budget


# --------------------------------------------------------------------------- text part


def test_text_part_is_complete_in_order_and_wrapped(
    render_settings: Settings, issue_content: IssueContent
) -> None:
    text = personalise(Renderer(render_settings).compile(issue_content), RECIPIENT)[1]

    positions = []
    for section in issue_content.sections:
        positions.append(text.index(f"== {section.name.upper()} =="))
        for article in section.articles:
            positions.append(text.index(article.title))
            assert f"\n{article.url}\n" in text  # in full, on its own line
            assert f"By {article.author}" in text
    positions.append(text.index("== MORE STORIES =="))
    for article in issue_content.more:
        positions.append(text.index(article.title))
        assert f"  {article.url}\n" in text
    assert positions == sorted(positions)
    for value in (RECIPIENT.view_url, RECIPIENT.unsubscribe_url, RECIPIENT.preferences_url):
        assert f"\n{value}\n" in text
    assert "1 Example Street\nSpringfield 12345\n" in text
    assert "**ferries, frost and fishing quotas**" in text  # Markdown stays readable as is
    for line in text.splitlines():
        if "://" not in line:
            assert len(line) <= 78, line
    assert "<" not in text.replace("<script>", "")
    assert "&amp;" not in text


def test_long_urls_are_never_broken(render_settings: Settings) -> None:
    url = "https://news.example.org/" + "-".join(["very-long-slug"] * 12) + "?a=1&b=2"
    article = make_article(1, "Europe", url=url, dek="word " * 60)
    content = dataclasses.replace(
        make_issue_content(sections=(), more=0), sections=(SectionBlock("Europe", (article,)),)
    )
    text = personalise(Renderer(render_settings).compile(content), RECIPIENT)[1]
    assert f"\n{url}\n" in text
    assert max(len(line) for line in text.splitlines() if "://" not in line) <= 78


def test_wrap_text_keeps_indents_and_urls() -> None:
    url = "https://example.org/" + "x" * 90
    text = wrap_text(f"* {'word ' * 30}\n  {url}\n\n\n\nend")
    lines = text.splitlines()
    assert lines[0].startswith("* word") and lines[1].startswith("  word")
    assert f"  {url}" in lines
    assert "\n\n\n" not in text
    assert all(len(line) <= 78 for line in lines if "://" not in line)


def test_shorten_cuts_at_a_word_boundary() -> None:
    text = "alpha beta gamma " * 30
    short = shorten(text, 50)
    assert len(short) <= 50 and short.endswith("…")
    assert short[:-1] == text[: len(short) - 1].rstrip()
    assert shorten("short", 50) == "short"


# --------------------------------------------------------------------------- whitespace


def test_collapse_keeps_conditional_comments_and_pre() -> None:
    markup = (
        "<html>\n  <head>\n    <!--[if mso]>\n    <xml>\n    </xml>\n    <![endif]-->\n"
        "  </head>\n  <body>\n    <pre>  a\n    b  </pre>\n    <a>x</a> <a>y</a>\n"
        "    <div>\n      text\n    </div>\n  </body>\n</html>"
    )
    out = collapse_whitespace(markup)
    assert "<!--[if mso]><xml></xml><![endif]-->" in out
    assert "<pre>  a\n    b  </pre>" in out
    assert "<a>x</a> <a>y</a>" in out  # a visible space between inline tags stays
    assert "<div> text </div>" in out
    assert len(out) < len(markup)


def test_compiled_html_keeps_outlook_conditionals(
    render_settings: Settings, issue_content: IssueContent
) -> None:
    body = personalise(Renderer(render_settings).compile(issue_content), RECIPIENT)[0]
    assert body.count("<!--[if mso | IE]>") > 10
    assert body.count("<!--[if ") == body.count("<![endif]-->")  # every conditional closed
    assert "<!--[if mso]>" in body
    assert "\n" not in body.split("<body", 1)[1]


# --------------------------------------------------------------------------- templates


def test_default_templates_dir_holds_the_templates() -> None:
    folder = default_templates_dir()
    assert (folder / "digest.mjml.j2").is_file()
    assert (folder / "digest.txt.j2").is_file()
    assert (folder / "partials" / "article.mjml.j2").is_file()


def test_templates_dir_overrides_one_partial_and_falls_back(
    render_settings: Settings, issue_content: IssueContent, tmp_path: Path
) -> None:
    (tmp_path / "partials").mkdir()
    footer = (default_templates_dir() / "partials" / "footer.mjml.j2").read_text()
    (tmp_path / "partials" / "footer.mjml.j2").write_text(
        footer.replace("Update your preferences", "Choose your sections")
    )
    settings = dataclasses.replace(render_settings, templates_dir=str(tmp_path))
    body = personalise(Renderer(settings).compile(issue_content), RECIPIENT)[0]
    assert "Choose your sections" in body
    assert "View in your browser" in body  # the header still comes from the defaults


def test_a_broken_override_is_a_config_error(
    render_settings: Settings, issue_content: IssueContent, tmp_path: Path
) -> None:
    (tmp_path / "digest.mjml.j2").write_text("<mjml><mj-body>{{ nope }}</mj-body></mjml>")
    settings = dataclasses.replace(render_settings, templates_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"digest\.mjml\.j2"):
        Renderer(settings).compile(issue_content)


def test_article_view_fields_are_all_used() -> None:
    """Guards the template contract: a new ArticleView field needs a rendering decision."""
    assert {f.name for f in dataclasses.fields(ArticleView)} == {
        "id",
        "title",
        "url",
        "section",
        "published_at",
        "author",
        "dek",
        "summary",
        "image_url",
        "image_alt",
        "image_credit",
        "image_width",
        "image_height",
    }


def test_credit_that_carries_its_own_label_is_not_labelled_twice(
    render_settings: Settings,
) -> None:
    """Feeds often write "Photo: Agency"; the email shows "Photo: Agency", not "Photo: Photo:"."""
    article = make_article(1, "Europe", image_credit="Photo: Harbour Wire / K. Lund")
    content = IssueContent(
        number=1, window_start=article.published_at, window_end=article.published_at,
        label="2025-W47", sections=(SectionBlock("Europe", (article,)),),
    )
    compiled = Renderer(render_settings).compile(content)
    html_body = compiled.html.fill(sample_recipient(render_settings))
    assert "Photo: Harbour Wire / K. Lund" in html_body
    assert "Photo: Photo:" not in html_body


# --------------------------------------------------------------------------- look and greeting


def test_no_greeting_when_the_subscriber_has_no_name(
    render_settings: Settings, issue_content: IssueContent
) -> None:
    compiled = Renderer(render_settings).compile(issue_content)
    for name in ("", "   "):
        body, text = personalise(compiled, dataclasses.replace(RECIPIENT, name=name))
        assert Outline(body).of("dg-greeting") == [""]
        assert "Hello" not in body and "Hello" not in text
        # The empty greeting line only widens the gap above "View in your browser".
        assert text.startswith("The Example Weekly\nIssue 47 · 21 November 2025\n\n\nView in")
    body, text = personalise(compiled, RECIPIENT)
    assert text.startswith("The Example Weekly\nIssue 47 · 21 November 2025\nHello Ada,\n\n")


def test_theme_settings_reach_every_colour_and_font_in_the_html(
    render_settings: Settings, issue_content: IssueContent
) -> None:
    themed = dataclasses.replace(
        render_settings,
        theme_accent="#123456", theme_text="#0a0b0c", theme_background="#fafaf0",
        theme_surface="#fffffe", theme_muted="#4a4a4a", theme_link="#00305a",
        theme_rule="#c0c0c0", theme_dark_background="#010203", theme_dark_text="#f0f0f1",
        theme_heading_font="'Playfair Display', Georgia, serif",
        theme_body_font="'Source Sans Pro', Arial, sans-serif",
        theme_logo_url="https://img.news.example.org/logo.png",
        theme_logo_width=240, theme_logo_height=60, theme_logo_alt="Example Weekly logo",
    )
    default_body = personalise(Renderer(render_settings).compile(issue_content), RECIPIENT)[0]
    body = personalise(Renderer(themed).compile(issue_content), RECIPIENT)[0]
    outline = Outline(body)

    for colour in ("#123456", "#0a0b0c", "#fafaf0", "#fffffe", "#4a4a4a", "#00305a",
                   "#c0c0c0", "#010203", "#f0f0f1"):
        assert colour in body.lower()
    # No default colour is left anywhere: every template reads the theme.
    for colour in ("#a33b20", "#1f2328", "#f4f1ea", "#5f6368", "#d8d2c4", "#121212"):
        assert colour in default_body and colour not in body.lower()
    assert "font-family:'Playfair Display', Georgia, serif" in body
    assert "font-family:'Source Sans Pro', Arial, sans-serif" in body
    logo = [v for t, v in outline.elements if t == "img" and v["src"].endswith("logo.png")]
    assert logo == [{
        "src": "https://img.news.example.org/logo.png", "alt": "Example Weekly logo",
        "width": "240", "height": "60", "style": logo[0]["style"],
    }]
    assert outline.of("dg-masthead") == [""]  # the logo replaces the name
    # Outlook.com's dark mode hooks sit beside prefers-color-scheme.
    assert "[data-ogsc]" in body and "[data-ogsb]" in body


def test_preheader_is_hidden_in_the_page_colour_and_followed_by_a_spacer(
    render_settings: Settings, issue_content: IssueContent
) -> None:
    compiled = Renderer(render_settings).compile(issue_content)
    body = personalise(compiled, RECIPIENT)[0]
    opening = body.split("<body", 1)[1]
    div = re.search(r'<div class="dg-preheader" style="([^"]*)">(.*?)</div>', opening)
    assert div is not None and opening.index(div.group(0)) < 400  # first thing in the body
    assert "display:none" in div.group(1)
    assert div.group(2).startswith(
        compiled.preheader.encode("ascii", "xmlcharrefreplace").decode()
    )
    assert div.group(2).endswith("&#8204;&#160;" * 90)
    # Its colour is the page's own background (a class in the head, see the theme partial).
    assert ".dg-preheader { color: #f4f1ea; }" in body


def test_article_dates_and_photo_sizes_from_the_feed(render_settings: Settings) -> None:
    square = make_article(1, "Europe", image_width=800, image_height=800)
    tall = make_article(2, "Europe", 1, image_width=600, image_height=900)
    content = dataclasses.replace(
        make_issue_content(sections=(), more=0),
        sections=(SectionBlock("Europe", (square, tall)),),
    )
    settings = dataclasses.replace(render_settings, timezone="Pacific/Auckland")
    outline = body_of(Renderer(settings).compile(content))
    sizes = [(v["width"], v["height"]) for t, v in outline.elements if t == "img"]
    assert sizes == [("600", "600"), ("160", "240")]
    assert "auto" not in outline.attrs("img", "height")
    # 20 Nov 2025 07:00 UTC is already the 20th in Auckland (UTC+13): dates follow the zone.
    assert outline.of("dg-author") == [
        f"By {square.author} · 21 Nov 2025", f"By {tall.author} · 21 Nov 2025"
    ]


def test_the_demo_issue_at_the_default_layout_stays_far_below_gmails_clip(
    tmp_path: Path,
) -> None:
    """24 articles in the cards layout: at most 75 KB of HTML, with nothing trimmed."""
    settings = demo_settings()
    assert settings.layout == "cards"
    content = demo_content(tmp_path, settings)
    assert content.article_count == 24
    compiled = Renderer(settings).compile(content)
    body = personalise(compiled, DEMO_RECIPIENT)[0]
    assert len(body.encode()) <= 75_000
    assert compiled.report.html_bytes <= 75_000  # even with the longest recipient values
    assert not compiled.report.trimmed
    assert len(compiled.article_ids) == 24
