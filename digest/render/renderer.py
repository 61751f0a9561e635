"""The Renderer: Jinja2 → MJML → HTML (and plain text), compiled once per section variant.

The expensive work (Jinja, MJML, the size gate) runs once per issue and distinct section
set. Per-recipient values are left as opaque slot tokens and split out into
:class:`~digest.personalise.SplicedTemplate` chunks, so a recipient costs one string join.
"""

from __future__ import annotations

import importlib.util
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from mjml import mjml_to_html

import digest
from digest.config import Settings
from digest.errors import ConfigError
from digest.headlines import check_subject, default_preheader, default_subject
from digest.issues import ArticleView, IssueContent
from digest.personalise import SplicedTemplate
from digest.render.markup import ascii_html, collapse_whitespace, head_css_bytes, intro_html
from digest.render.plan import MAX_GATE_COMPILES, Plan, saving_per_step
from digest.render.results import CompiledIssue, RenderReport, sample_recipient
from digest.render.stories import Story, height_for, make_story
from digest.render.text import wrap_text
from digest.render.tokens import Tokens
from digest.render.values import (
    clean_text,
    format_date,
    lang_tag,
)
from digest.theme import theme_of

HTML_TEMPLATE = "digest.mjml.j2"
TEXT_TEMPLATE = "digest.txt.j2"
#: Width of a card's thumbnail column in the cards layout (the photo is 24 px narrower).
THUMB_COLUMN = 184
#: &zwnj;&nbsp; pairs after the preheader, so nothing after it shows in the inbox line.
PREHEADER_SPACER = 90


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
        """The subject line: the issue's override, else settings.subject_template.

        Either way it is one line (it goes into a mail header) of at most
        headlines.SUBJECT_MAX characters.
        """
        if content.subject:
            return check_subject(content.subject, what="the issue's subject")
        return default_subject(
            self.settings.subject_template,
            newsletter=self.settings.newsletter_name,
            headline=clean_text(shown[0].title) if shown else "",
            more=max(len(shown) - 1, 0),
            number=content.number,
            date=format_date(content, self.settings),
        )

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
            now = "move" if plan.can_move() else "drop" if plan.can_drop() else ""
            if not now:
                break
            if now != phase:
                phase, history = now, []
            steps = len(plan.moved) if phase == "move" else len(plan.dropped)
            history.append((size, steps))
            wanted = max(1, math.ceil((size - budget) / saving_per_step(history, plan, phase)))
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

    def _plan(self, content: IssueContent, variant: frozenset[str] | None) -> Plan:
        def keep(section: str) -> bool:
            return variant is None or section.casefold() in variant

        sections = [(s.name, list(s.articles)) for s in content.sections if keep(s.name)]
        more = [a for a in content.more if keep(a.section)]
        rank = {a.id: (i, j) for i, (_, arts) in enumerate(sections) for j, a in enumerate(arts)}
        return Plan(sections=[(n, a) for n, a in sections if a], more=more, rank=rank,
                    pinned=content.pinned)

    # ---- one Jinja + MJML pass

    def _build(self, content: IssueContent, plan: Plan) -> _Built:
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
        tokens = Tokens(avoid)
        unlinked: list[int] = []

        def story(article: ArticleView) -> Story:
            made = make_story(article, settings, tokens, campaign=content.label,
                              short=plan.shorten)
            if not made.url:
                unlinked.append(article.id)
            return made

        sections = [
            {"name": clean_text(name), "articles": [story(a) for a in arts]}
            for name, arts in plan.sections
            if arts
        ]
        more = [story(a) for a in plan.more]
        shown = plan.shown()
        preheader = clean_text(content.preheader) or default_preheader(shown)
        subject = self.subject(content, shown)
        title = f"{settings.newsletter_name} · Issue {content.number}"
        theme = theme_of(settings)
        subscribe_url = settings.base_url.rstrip("/") + "/subscribe"
        common: dict[str, Any] = {
            "newsletter_name": settings.newsletter_name,
            "number": content.number,
            "label": content.label,
            "date": format_date(content, settings),
            "lang": lang_tag(settings.language),
            "preheader": preheader,
            "subject": subject,
            "sections": sections,
            "more": more,
            "dropped_count": len(plan.dropped),
            "postal_lines": [
                line.strip() for line in settings.postal_address.splitlines() if line.strip()
            ],
            "theme": theme,
            "layout": settings.layout,
            "subscribe_url": subscribe_url,
        }
        first = sections[0]["articles"] if sections else []
        mjml = self._render(
            HTML_TEMPLATE,
            common,
            title_token=tokens.attr(title),
            intro_html=intro_html(content.intro, tokens),
            slot=tokens.slot_map("html", "url"),
            lead=first[0] if first else None,
            subscribe_href=tokens.attr(subscribe_url),
            logo_src=tokens.attr(theme.logo_url) if theme.logo_url else "",
            logo_alt=tokens.attr(theme.logo_alt),
            height_for=height_for,
            thumb_column=THUMB_COLUMN,
            thumb_width=THUMB_COLUMN - 24,
            preheader_spacer=PREHEADER_SPACER,
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
