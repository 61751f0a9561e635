"""The pre-send check: what would go wrong in inboxes if this compiled issue went out now."""

from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import compat32
from html.parser import HTMLParser
from urllib.parse import urlsplit

from digest.config import Settings
from digest.domains import aligned, domain_of, organisational_domain
from digest.errors import DigestError
from digest.headlines import subject_warning
from digest.issues import IssueContent
from digest.render import (
    GMAIL_CLIP_BYTES,
    GMAIL_HEAD_CSS_BYTES,
    CompiledIssue,
    clean_text,
    head_css_bytes,
    sample_recipient,
)
from digest.theme import contrast_problems

#: Attribute values that run code when a client follows or loads them.
_CODE_SCHEMES = ("javascript:", "vbscript:", "data:text/html")
#: Attributes that hold a URL.
_URL_ATTRS = frozenset({"href", "src", "action", "formaction", "background", "poster"})


#: The flag that lets an editor send despite overridable errors and warnings.
OVERRIDE_FLAG = "--ignore-check"


@dataclass
class CheckReport:
    """Sentences for humans: errors block sending, warnings are worth a look, notes inform.

    ``overridable`` errors (the sender's reputation: https unsubscribe, DKIM alignment) fail
    the check and the send unless the editor overrides them with --ignore-check. ``advisories`` are
    warnings that never block a send: DKIM may be signed at the relay, which digest cannot see.
    """

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    overridable: list[str] = field(default_factory=list)
    advisories: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing blocks sending (overridable errors block until overridden)."""
        return not self.errors and not self.overridable

    def lines(self) -> list[str]:
        """Every finding as one line, errors first, for a CLI to print."""
        return (
            [f"error: {m}" for m in self.errors]
            + [f"error: {m} (override with {OVERRIDE_FLAG})" for m in self.overridable]
            + [f"warning: {m}" for m in self.warnings + self.advisories]
            + [f"note: {m}" for m in self.notes]
        )


class _Scan(HTMLParser):
    """Collects images, links and anything that could run code from compiled HTML."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.images: list[dict[str, str]] = []
        self.links: list[tuple[str, str]] = []  # (tag, url)
        self.dangers: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag in ("script", "iframe", "object", "embed", "form"):
            self.dangers.append(f"a <{tag}> element")
        for name, value in values.items():
            if name.startswith("on"):
                self.dangers.append(f"an event handler attribute {name}= on <{tag}>")
            squeezed = "".join(value.split()).lower()
            if squeezed.startswith(_CODE_SCHEMES):
                self.dangers.append(f"a {squeezed.split(':', 1)[0]}: URL in {name}= on <{tag}>")
        if tag == "img":
            self.images.append(values)
        for name in _URL_ATTRS & values.keys():
            self.links.append((tag, values[name]))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)


def image_urls(compiled: CompiledIssue, settings: Settings) -> list[str]:
    """Every image URL a reader's mail client would load for this variant, in order."""
    scan = _Scan()
    scan.feed(compiled.html.fill(sample_recipient(settings)))
    scan.close()
    return list(dict.fromkeys(img.get("src", "") for img in scan.images if img.get("src")))


def _kib(size: int) -> str:
    return f"{size / 1024:.1f} KB"


def check_issue(compiled: CompiledIssue, content: IssueContent, settings: Settings) -> CheckReport:
    """Check a compiled issue variant before sending; errors mean it must not go out."""
    report = CheckReport()
    errors, warnings, notes = report.errors, report.warnings, report.notes
    check_reputation(compiled, settings, report, content.label)

    if content.is_empty:
        errors.append("The issue has no articles; import articles or widen the window.")
    elif compiled.is_empty:
        errors.append(
            "This section variant has no articles; its subscribers would get an empty email."
        )
    # WCAG AA: text a reader cannot read is a defect, not a matter of taste.
    errors.extend(contrast_problems(settings))
    for section in content.sections:
        if not section.articles:
            warnings.append(f"Section “{section.name}” has no articles this issue.")
    if long_subject := subject_warning(compiled.subject):
        warnings.append(long_subject[0].upper() + long_subject[1:] + ".")

    # Sizes are measured with the longest plausible recipient values filled in.
    sample = sample_recipient(settings)
    body = compiled.html.fill(sample)
    text = compiled.text.fill(sample)
    size = len(body.encode())
    margin = GMAIL_CLIP_BYTES - size
    if margin < 0:
        errors.append(
            f"The HTML is {size:,} bytes, {-margin:,} over Gmail's {GMAIL_CLIP_BYTES:,}-byte "
            "clip limit; readers would see “[Message clipped]”. Lower the section caps."
        )
    else:
        notes.append(
            f"The HTML is {size:,} bytes ({_kib(size)}), {margin:,} bytes under Gmail's "
            f"{GMAIL_CLIP_BYTES:,}-byte clip limit."
        )
        if size > settings.html_size_budget:
            warnings.append(
                f"The HTML is {size:,} bytes, "
                f"over html_size_budget ({settings.html_size_budget:,})."
            )
    css = head_css_bytes(body)
    if css > GMAIL_HEAD_CSS_BYTES:
        errors.append(
            f"The head CSS is {css:,} bytes; Gmail drops all of it past {GMAIL_HEAD_CSS_BYTES:,} "
            "bytes. Trim the templates' <mj-style>."
        )
    else:
        notes.append(f"The head CSS is {css:,} bytes (Gmail's limit is {GMAIL_HEAD_CSS_BYTES:,}).")
    warnings.extend(compiled.report.describe())

    scan = _Scan()
    scan.feed(body)
    scan.close()
    for danger in dict.fromkeys(scan.dangers):
        errors.append(f"The HTML contains {danger}; check templates_dir overrides.")

    missing_alt = [img for img in scan.images if not img.get("alt", "").strip()]
    if missing_alt:
        warnings.append(f"{len(missing_alt)} image(s) have no alt text.")
    stand_ins = [
        a for s in content.sections for a in s.articles if a.image_url and not a.image_alt.strip()
    ]
    if stand_ins:
        warnings.append(
            f"{len(stand_ins)} article image(s) have no alt text of their own; "
            "the headline stands in."
        )

    insecure: list[str] = []
    for tag, url in scan.links:
        url = url.strip()
        scheme = urlsplit(url).scheme.lower() if url else ""
        if url == "#":
            warnings.append(f"A <{tag}> link was neutralised to “#” because its URL was unsafe.")
        elif not scheme:
            errors.append(
                f"The relative link {url!r} on <{tag}> cannot work in an email; "
                "use an absolute https:// URL (check base_url)."
            )
        elif scheme == "http":
            insecure.append(url)
    if insecure:
        example = insecure[0] if len(insecure[0]) <= 80 else insecure[0][:77] + "..."
        warnings.append(
            f"{len(insecure)} link(s) or image(s) use http:// rather than https://, "
            f"for example {example}."
        )

    shown = {a.id: a for s in content.sections for a in s.articles} | {
        a.id: a for a in content.more
    }
    for article_id in compiled.report.unlinked:
        article = shown.get(article_id)
        title = clean_text(article.title) if article else f"#{article_id}"
        warnings.append(f"Article “{title}” has no usable http(s) link and is shown without one.")

    html_slots = {field for field, context in compiled.html.slots if context == "url"}
    text_slots = {field for field, _ in compiled.text.slots}
    if "unsubscribe_url" not in html_slots:
        errors.append(
            "The HTML part has no unsubscribe link; the templates must link slot.unsubscribe_url."
        )
    if "unsubscribe_url" not in text_slots:
        errors.append(
            "The text part has no unsubscribe link; the templates must show slot.unsubscribe_url."
        )

    address = [line.strip() for line in settings.postal_address.splitlines() if line.strip()]
    if not address:
        errors.append(
            "postal_address is not set; anti-spam law (CAN-SPAM) requires the sender's postal "
            "address in every issue."
        )
    else:
        first = address[0]
        if html.escape(first, quote=False) not in body and html.escape(first) not in body:
            errors.append(
                "The HTML part does not show postal_address; check templates_dir overrides."
            )
        if first not in text:
            errors.append(
                "The text part does not show postal_address; check templates_dir overrides."
            )
    return report


def _list_unsubscribe_uris(compiled: CompiledIssue, settings: Settings, label: str) -> list[str]:
    """The URIs of the List-Unsubscribe header the message builder really writes."""
    from digest.message import MessageTemplate, make_message_id

    template = MessageTemplate(compiled.subject, compiled.html, compiled.text, settings,
                               issue=label)
    reader = dataclasses.replace(sample_recipient(settings), email="reader@example.com")
    data = template.build(reader, make_message_id("check.invalid"))
    header = message_from_bytes(data, policy=compat32).get("List-Unsubscribe", "")
    # RFC 2369 §2: a comma-separated list of URIs, each in angle brackets.
    return [part.strip().strip("<>").strip() for part in str(header).split(",") if part.strip()]


def check_reputation(compiled: CompiledIssue, settings: Settings, report: CheckReport,
                     label: str = "") -> None:
    """What would cost the sender's domain the inbox: http unsubscribe links, misaligned DKIM.

    Gmail and Yahoo (since 2024) and Outlook.com (since May 2025) reject bulk mail without
    https one-click unsubscribe (RFC 8058 §3.1) or with DKIM that does not align with From.
    """
    try:
        uris = _list_unsubscribe_uris(compiled, settings, label)
    except DigestError as exc:
        report.errors.append(f"The message cannot be built: {exc}")
        return
    for uri in uris:
        scheme = urlsplit(uri).scheme.lower()
        if scheme == "mailto":
            continue
        shown = uri if len(uri) <= 60 else uri[:57] + "..."
        if scheme != "https":
            report.overridable.append(
                f"List-Unsubscribe holds {shown}, which is not https; RFC 8058 one-click "
                "unsubscribe needs an https URL, and Gmail, Yahoo and Outlook.com reject bulk "
                "mail without it. Set base_url to the https address of digest serve."
            )
    from_domain = domain_of(settings.from_email)
    dkim_domain = settings.dkim_domain.strip().rstrip(".").lower()
    if not dkim_domain:
        report.advisories.append(
            "DKIM is not configured, so digest sends unsigned mail: set dkim_domain, "
            "dkim_selector and dkim_private_key (see `digest dns`), unless your relay signs "
            f"for {from_domain}."
        )
    elif not aligned(dkim_domain, from_domain):
        report.overridable.append(
            f"dkim_domain {dkim_domain} is not aligned with the From domain {from_domain} "
            f"({organisational_domain(dkim_domain)} is not {organisational_domain(from_domain)}),"
            " so DMARC fails and Gmail, Yahoo and Outlook.com may reject the mail. Sign with a "
            f"key for {organisational_domain(from_domain)} or one of its subdomains."
        )
    else:
        report.notes.append(f"DKIM signs as {dkim_domain}, aligned with From ({from_domain}).")
