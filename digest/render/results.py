"""What a compile produces: the compiled variant, its size report, and the splice per reader."""

from __future__ import annotations

from dataclasses import dataclass

from digest.config import Settings
from digest.personalise import Recipient, SplicedTemplate
from digest.render.values import SHORT_BLURB_CHARS

#: Gmail clips a message body larger than about 102 KB behind a "View entire message" link.
GMAIL_CLIP_BYTES = 102_000
#: Gmail drops every <style> block once the head CSS passes 16 KB.
GMAIL_HEAD_CSS_BYTES = 16_384


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


