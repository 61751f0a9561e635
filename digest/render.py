"""Issue rendering: Jinja2 → MJML → HTML (and plain text), compiled once per section variant.

The expensive work (Jinja, MJML, the size gate) runs once per issue and distinct section
set. Per-recipient values are left as opaque slot tokens and split out into
:class:`~digest.personalise.SplicedTemplate` chunks, so a recipient costs one string join.

mjml 0.12 decodes entities in attribute values and writes them back raw, so
``alt="a&quot; onerror=&quot;x"`` comes out as ``alt="a" onerror="x"``. Untrusted text
therefore never reaches an MJML attribute: templates get opaque alphanumeric tokens for
every href, src, alt and title, and :class:`_Tokens` substitutes the escaped values into
the compiled HTML. Text content is escaped by Jinja and survives MJML intact.
"""

from __future__ import annotations

import html
import importlib.util
import math
import re
import secrets
import textwrap
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import jinja2
from markdown_it import MarkdownIt
from markdown_it.token import Token
from mjml import mjml_to_html

import digest
from digest.config import Settings
from digest.errors import ConfigError
from digest.issues import ArticleView, IssueContent
from digest.personalise import Context, Recipient, SplicedTemplate

#: Gmail clips a message body larger than about 102 KB behind a "View entire message" link.
GMAIL_CLIP_BYTES = 102_000
#: Gmail drops every <style> block once the head CSS passes 16 KB.
GMAIL_HEAD_CSS_BYTES = 16_384
#: What the size gate shortens a dek or summary to.
SHORT_BLURB_CHARS = 200
#: Plain-text line width (RFC 3676 suggests 78).
TEXT_WIDTH = 78
#: How many times the size gate may recompile one variant before it gives up.
MAX_GATE_COMPILES = 12

HTML_TEMPLATE = "digest.mjml.j2"
TEXT_TEMPLATE = "digest.txt.j2"

_WS = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029]")
_LANG = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*")
_PRE = re.compile(r"(<pre\b.*?</pre>)", re.IGNORECASE | re.DOTALL)
# Only whitespace that contains a line break is layout indentation from MJML or the
# templates; a single space between inline tags ("</a> <a>") is visible and stays.
_BETWEEN_TAGS = re.compile(r">[ \t\r]*\n[ \t\r\n]*<")
_NEWLINE_RUN = re.compile(r"[ \t\r]*\n[ \t\r\n]*")
_STYLE = re.compile(r"<style\b[^>]*>(.*?)</style>", re.IGNORECASE | re.DOTALL)
_HEAD = re.compile(r"<head\b.*?</head>", re.IGNORECASE | re.DOTALL)
_RAW_TEXT = re.compile(r"(<(?:style|script)\b.*?</(?:style|script)>)", re.IGNORECASE | re.DOTALL)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class RenderReport:
    """Sizes and size-gate decisions for one compiled variant."""

    html_bytes: int  # compiled HTML with the worst-case sample recipient filled in
    uncollapsed_html_bytes: int  # the same before whitespace collapsing
    head_css_bytes: int
    text_bytes: int
    mjml_bytes: int
    budget: int
    compiles: int  # MJML compiles this variant took; more than 1 means the gate trimmed
    compile_seconds: float  # total time spent in MJML for this variant
    moved_to_more: tuple[int, ...] = ()  # article ids moved from sections to "more stories"
    shortened: tuple[int, ...] = ()  # article ids whose dek/summary was shortened
    dropped: tuple[int, ...] = ()  # article ids left out entirely (linked via view_url)
    unlinked: tuple[int, ...] = ()  # article ids shown without a link: unusable URL
    over_budget: bool = False

    @property
    def collapse_saving(self) -> int:
        """Bytes saved by collapsing layout whitespace."""
        return self.uncollapsed_html_bytes - self.html_bytes

    @property
    def trimmed(self) -> bool:
        """True when the size gate changed the issue to fit the budget."""
        return bool(self.moved_to_more or self.shortened or self.dropped)

    def describe(self) -> list[str]:
        """Human sentences about what the size gate did."""
        out = []
        if self.shortened:
            out.append(
                f"Shortened {len(self.shortened)} summaries to {SHORT_BLURB_CHARS} characters "
                "to fit the size budget."
            )
        if self.moved_to_more:
            out.append(
                f"Moved {len(self.moved_to_more)} article(s) into “More stories” "
                "to fit the size budget."
            )
        if self.dropped:
            out.append(
                f"Left {len(self.dropped)} article(s) out of the email (linked through the "
                "browser version) to fit the size budget."
            )
        return out


@dataclass(frozen=True, slots=True)
class CompiledIssue:
    """One issue variant compiled once: subject, preheader, and HTML/text bodies with slots."""

    subject: str
    preheader: str
    html: SplicedTemplate
    text: SplicedTemplate
    mjml: str  # the intermediate MJML source (with opaque tokens), for debugging
    report: RenderReport
    variant: frozenset[str] | None  # casefolded section names; None means every section
    sections: tuple[str, ...]  # section labels shown, in order
    article_ids: tuple[int, ...]  # every article shown, in sections then "more stories"

    @property
    def is_empty(self) -> bool:
        """True when this variant shows no article at all."""
        return not self.article_ids


def personalise(compiled: CompiledIssue, recipient: Recipient) -> tuple[str, str]:
    """The recipient's HTML and plain-text bodies: a splice, no Jinja or MJML."""
    return compiled.html.fill(recipient), compiled.text.fill(recipient)


def sample_recipient(settings: Settings) -> Recipient:
    """A worst-case-length recipient, used to measure sizes and to run checks."""
    base = settings.base_url.rstrip("/")
    token = "x" * 180  # longer than any signed link token tokens.py issues
    return Recipient(
        email=("m" * 64) + "@" + ("d" * 180) + ".example",
        name="N" * 100,
        unsubscribe_url=f"{base}/u/{token}",
        preferences_url=f"{base}/preferences/{token}",
        view_url=f"{base}/archive/{token}",
    )


# --------------------------------------------------------------------------- helpers


def default_templates_dir() -> Path:
    """The shipped templates: the installed ``digest.templates`` package, else the checkout."""
    try:
        spec = importlib.util.find_spec("digest.templates")
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        for location in spec.submodule_search_locations or ():
            path = Path(location)
            if (path / HTML_TEMPLATE).is_file():
                return path
    return Path(digest.__file__).resolve().parent.parent / "templates"


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


def format_date(content: IssueContent, settings: Settings) -> str:
    """The issue date as readers see it: the window's last day in the publication's zone."""
    # The window is half-open: a week ending Monday 00:00 is dated the Sunday before.
    day = (content.window_end - timedelta(microseconds=1)).astimezone(settings.tz).date()
    return f"{day.day} {day:%B %Y}"


# --------------------------------------------------------------------------- tokens


class _Tokens:
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


# --------------------------------------------------------------------------- view model


@dataclass(frozen=True, slots=True)
class _Story:
    """An article prepared for the templates: clean text, tokens for the HTML attributes."""

    id: int
    title: str
    section: str
    author: str
    blurb: str
    url: str  # validated http(s) URL with UTM parameters, for the text part; "" if unusable
    href: str  # token for the HTML href, or ""
    image_src: str  # token, or "" when there is no usable image
    image_alt: str  # token
    credit: str


@dataclass(slots=True)
class _Plan:
    """Which articles go where for one variant; the size gate edits it between compiles."""

    sections: list[tuple[str, list[ArticleView]]]
    more: list[ArticleView]
    rank: dict[int, tuple[int, int]] = field(default_factory=dict)  # id: (section, place)
    shorten: bool = False
    moved: list[int] = field(default_factory=list)
    dropped: list[ArticleView] = field(default_factory=list)

    def shown(self) -> list[ArticleView]:
        return [a for _, arts in self.sections for a in arts] + self.more

    def blurb_ids(self) -> list[int]:
        return [
            a.id for _, arts in self.sections for a in arts if len(_blurb(a)) > SHORT_BLURB_CHARS
        ]

    def section_count(self) -> int:
        return sum(len(arts) for _, arts in self.sections)

    def can_move(self) -> bool:
        return any(len(arts) > 1 for _, arts in self.sections)

    def move_one(self) -> bool:
        """Move the lowest-ranked article of the fullest section to the front of "more"."""
        candidates = [arts for _, arts in self.sections if len(arts) > 1]
        if not candidates:
            return False
        arts = max(candidates, key=len)
        article = arts.pop()
        self.moved.append(article.id)
        # Moved articles rank above the ones that were already past the section caps,
        # and read in section order, as they would have in the sections.
        count = len(self.moved)
        block = sorted([article, *self.more[: count - 1]], key=lambda a: self.rank[a.id])
        self.more[: count - 1] = block
        return True

    def drop_one(self) -> bool:
        if not self.more:
            return False
        self.dropped.insert(0, self.more.pop())
        return True


def _blurb(article: ArticleView) -> str:
    return clean_text(article.dek or article.summary)


@dataclass(frozen=True, slots=True)
class _Built:
    html: SplicedTemplate
    text: SplicedTemplate
    mjml: str
    html_bytes: int
    uncollapsed_bytes: int
    head_css: int
    seconds: float
    subject: str
    preheader: str
    unlinked: tuple[int, ...]


# --------------------------------------------------------------------------- renderer


class Renderer:
    """Compiles issues to HTML/text once per section variant and caches the result."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.templates_dir = default_templates_dir()
        loaders: list[jinja2.BaseLoader] = []
        if settings.templates_dir:
            loaders.append(jinja2.FileSystemLoader(settings.templates_dir))
        loaders.append(jinja2.FileSystemLoader(self.templates_dir))
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            # MJML is markup: escape everything; the text part is plain text.
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("mjml.j2", "html", "xml"),
                disabled_extensions=("txt.j2",),
                default_for_string=True,
                default=True,
            ),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        # Variants per issue. Looked up by identity first: hashing a whole issue on every
        # call would cost more than the splice itself when a sender asks per recipient.
        self._by_value: dict[IssueContent, dict[frozenset[str] | None, CompiledIssue]] = {}
        self._by_id: dict[int, tuple[IssueContent, dict[frozenset[str] | None, CompiledIssue]]]
        self._by_id = {}
        self._sample = sample_recipient(settings)
        #: Every MJML compile this renderer ran, size-gate recompiles included.
        self.mjml_compiles = 0

    # ---- public

    def compile(
        self, content: IssueContent, sections: Iterable[str] | None = None
    ) -> CompiledIssue:
        """The compiled variant of content for a subscriber's sections (None or empty: all)."""
        variant = self.variant_key(content, sections)
        entry = self._by_id.get(id(content))
        if entry is not None and entry[0] is content:
            variants = entry[1]
        else:
            variants = self._by_value.setdefault(content, {})
            self._by_id[id(content)] = (content, variants)
        compiled = variants.get(variant)
        if compiled is None:
            compiled = variants[variant] = self._compile(content, variant)
        return compiled

    @staticmethod
    def variant_key(content: IssueContent, sections: Iterable[str] | None) -> frozenset[str] | None:
        """Normalise a subscriber's section choice so equivalent choices share one compile.

        None (or empty) means every section. The result is casefolded and can be passed
        back to :meth:`compile` or to this method unchanged. A choice that matches nothing
        in this issue stays as it is, so it keeps meaning "nothing" (an empty variant)
        rather than collapsing into the empty set, which means "everything".
        """
        wanted = frozenset(s.casefold() for s in sections or () if s.strip())
        if not wanted:
            return None
        present = {s.name.casefold() for s in content.sections if s.articles}
        present |= {a.section.casefold() for a in content.more}
        chosen = frozenset(wanted & present)
        if not chosen:
            return wanted
        return None if chosen == present else chosen

    def subject(self, content: IssueContent, shown: list[ArticleView]) -> str:
        """The subject line: the issue's override, else settings.subject_template."""
        if content.subject:
            return clean_text(content.subject)
        headline = clean_text(shown[0].title) if shown else ""
        try:
            subject = self.settings.subject_template.format(
                newsletter=self.settings.newsletter_name,
                headline=headline,
                more=max(len(shown) - 1, 0),
                number=content.number,
                date=format_date(content, self.settings),
            )
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ConfigError(
                f"subject_template {self.settings.subject_template!r} is invalid ({exc}); "
                "use only {newsletter}, {headline}, {more}, {number} and {date}"
            ) from None
        # A subject goes into a mail header: no CR, LF or other control characters.
        return clean_text(subject)

    # ---- compile with the size gate

    def _compile(self, content: IssueContent, variant: frozenset[str] | None) -> CompiledIssue:
        plan = self._plan(content, variant)
        budget = self.settings.html_size_budget
        compiles = 0
        seconds = 0.0
        shortened: tuple[int, ...] = ()
        phase = ""
        history: list[tuple[int, int]] = []  # (html bytes, steps taken) within one phase
        while True:
            built = self._build(content, plan)
            compiles += 1
            seconds += built.seconds
            size = built.html_bytes
            if size <= budget or compiles >= MAX_GATE_COMPILES:
                break
            if not plan.shorten and plan.blurb_ids():
                # Cheapest first: shorter summaries keep every article in place.
                shortened = tuple(plan.blurb_ids())
                plan.shorten = True
                continue
            # Then move section articles into "more stories"; only then leave stories out.
            now = "move" if plan.can_move() else "drop" if plan.more else ""
            if not now:
                break
            if now != phase:
                phase, history = now, []
            steps = len(plan.moved) if phase == "move" else len(plan.dropped)
            history.append((size, steps))
            wanted = max(1, math.ceil((size - budget) / _saving_per_step(history, plan, phase)))
            for _ in range(wanted):
                if not (plan.move_one() if phase == "move" else plan.drop_one()):
                    break
        shown = plan.shown()
        report = RenderReport(
            html_bytes=built.html_bytes,
            uncollapsed_html_bytes=built.uncollapsed_bytes,
            head_css_bytes=built.head_css,
            text_bytes=len(built.text.fill(self._sample).encode()),
            mjml_bytes=len(built.mjml.encode()),
            budget=budget,
            compiles=compiles,
            compile_seconds=seconds,
            moved_to_more=tuple(plan.moved),
            shortened=shortened,
            dropped=tuple(a.id for a in plan.dropped),
            unlinked=built.unlinked,
            over_budget=built.html_bytes > budget,
        )
        return CompiledIssue(
            subject=built.subject,
            preheader=built.preheader,
            html=built.html,
            text=built.text,
            mjml=built.mjml,
            report=report,
            variant=variant,
            sections=tuple(name for name, arts in plan.sections if arts),
            article_ids=tuple(a.id for a in shown),
        )

    def _plan(self, content: IssueContent, variant: frozenset[str] | None) -> _Plan:
        def keep(section: str) -> bool:
            return variant is None or section.casefold() in variant

        sections = [(s.name, list(s.articles)) for s in content.sections if keep(s.name)]
        more = [a for a in content.more if keep(a.section)]
        rank = {a.id: (i, j) for i, (_, arts) in enumerate(sections) for j, a in enumerate(arts)}
        return _Plan(sections=[(n, a) for n, a in sections if a], more=more, rank=rank)

    # ---- one Jinja + MJML pass

    def _build(self, content: IssueContent, plan: _Plan) -> _Built:
        settings = self.settings
        avoid = (
            "".join(
                f"{a.title}{a.url}{a.author}{a.dek}{a.summary}{a.image_url}{a.image_alt}"
                f"{a.image_credit}{a.section}"
                for a in plan.shown()
            )
            + content.intro
            + content.preheader
            + content.subject
        )
        tokens = _Tokens(avoid)
        unlinked: list[int] = []

        def story(article: ArticleView) -> _Story:
            url = link_url(article.url)
            if not url:
                unlinked.append(article.id)
            elif settings.utm_source:
                url = add_utm(
                    url,
                    settings.utm_source,
                    settings.utm_medium,
                    settings.utm_campaign or content.label,
                )
            title = clean_text(article.title) or "Untitled"
            blurb = _blurb(article)
            if plan.shorten:
                blurb = shorten(blurb)
            image = link_url(article.image_url)
            # A linked image's alt text names the link; fall back to the headline.
            alt = clean_text(article.image_alt) or title
            return _Story(
                id=article.id,
                title=title,
                section=clean_text(article.section),
                author=clean_text(article.author),
                blurb=blurb,
                url=url,
                href=tokens.attr(url) if url else "",
                image_src=tokens.attr(image) if image else "",
                image_alt=tokens.attr(alt) if image else "",
                credit=credit_text(article.image_credit),
            )

        sections = [
            {"name": clean_text(name), "articles": [story(a) for a in arts]}
            for name, arts in plan.sections
            if arts
        ]
        more = [story(a) for a in plan.more]
        shown = plan.shown()
        preheader = clean_text(content.preheader) or _preheader(shown)
        subject = self.subject(content, shown)
        title = f"{settings.newsletter_name} · Issue {content.number}"
        common: dict[str, Any] = {
            "newsletter_name": settings.newsletter_name,
            "number": content.number,
            "label": content.label,
            "date": format_date(content, settings),
            "lang": _lang(settings.language),
            "preheader": preheader,
            "subject": subject,
            "sections": sections,
            "more": more,
            "dropped_count": len(plan.dropped),
            "postal_lines": [
                line.strip() for line in settings.postal_address.splitlines() if line.strip()
            ],
        }
        mjml = self._render(
            HTML_TEMPLATE,
            common,
            title_token=tokens.attr(title),
            intro_html=_intro_html(content.intro, tokens),
            slot=tokens.slot_map("html", "url"),
        )
        started = time.perf_counter()
        try:
            result = mjml_to_html(mjml)
        except Exception as exc:  # mjml raises bare ValueError/AssertionError on bad input
            raise ConfigError(
                f"MJML could not compile {HTML_TEMPLATE} ({exc}); check templates_dir overrides"
            ) from exc
        seconds = time.perf_counter() - started
        self.mjml_compiles += 1
        raw = tokens.substitute_attrs(result.html)
        collapsed = ascii_html(collapse_whitespace(raw))
        html_t = tokens.splice(collapsed)
        # Text slots are plain text; URLs there are shown, not escaped for HTML.
        text_tokens = tokens.slot_map("text", "text")
        text_src = self._render(
            TEXT_TEMPLATE, common, intro_text=content.intro.strip(), slot=text_tokens
        )
        text_t = tokens.splice(wrap_text(text_src))
        uncollapsed = tokens.splice(raw)
        return _Built(
            html=html_t,
            text=text_t,
            mjml=mjml,
            html_bytes=len(html_t.fill(self._sample).encode()),
            uncollapsed_bytes=len(uncollapsed.fill(self._sample).encode()),
            head_css=head_css_bytes(collapsed),
            seconds=seconds,
            subject=subject,
            preheader=preheader,
            unlinked=tuple(dict.fromkeys(unlinked)),
        )

    def _render(self, name: str, common: Mapping[str, Any], **extra: Any) -> str:
        try:
            template = self.env.get_template(name)
            return template.render({**common, **extra})
        except jinja2.TemplateError as exc:
            where = f" in {self.settings.templates_dir}" if self.settings.templates_dir else ""
            raise ConfigError(f"template {name}{where} failed: {exc}") from exc


def _saving_per_step(history: list[tuple[int, int]], plan: _Plan, phase: str) -> float:
    """Bytes one more move (or drop) saves: measured over the last round, else an
    overestimate, so the gate errs towards too few changes and compiles once more."""
    if len(history) >= 2:
        (size0, steps0), (size1, steps1) = history[-2], history[-1]
        if steps1 > steps0 and size0 > size1:
            return (size0 - size1) / (steps1 - steps0) * 0.95
    size = history[-1][0]
    if phase == "move":
        # The whole body divided among the section articles: more than any one saves.
        return size / max(plan.section_count(), 1)
    return size / max(len(plan.shown()), 1)


def _lang(language: str) -> str:
    """A BCP 47 tag for the lang attribute ("en_GB" becomes "en-GB"); "en" if unusable."""
    tag = language.strip().replace("_", "-")
    return tag if _LANG.fullmatch(tag) else "en"


def _preheader(shown: list[ArticleView], limit: int = 140) -> str:
    """Inbox preview text from the top stories' headlines."""
    titles = [clean_text(a.title) for a in shown[:3] if clean_text(a.title)]
    return shorten(" · ".join(titles), limit)


def _intro_html(text: str, tokens: _Tokens) -> str:
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
