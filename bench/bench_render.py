"""Rendering benchmark: MJML compile time per issue, personalisation rate, whitespace saving.

Example:
    .venv/bin/python bench/bench_render.py --per-section 4 --repeat 15 --messages 50000 \
        --layout cards
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

from digest.config import Settings
from digest.issues import ArticleView, IssueContent, SectionBlock
from digest.personalise import Recipient
from digest.render import Renderer, personalise

SECTIONS = ("Europe", "Latin America", "Asia-Pacific", "Military Industrial Complex")
# Invented copy, long enough to look like a real dek.
DEK = (
    "Councils, unions and operators spent the week arguing over a timetable that nobody "
    "likes but everybody needs, and the compromise leaves two questions open."
)


def make_content(per_section: int, more: int) -> IssueContent:
    """A synthetic issue shaped like a real one: hero images, credits, authors, deks."""
    end = datetime(2025, 11, 21, 9, tzinfo=UTC)
    next_id = 0

    def article(section: str) -> ArticleView:
        nonlocal next_id
        next_id += 1
        slug = f"{section.lower().replace(' ', '-')}-{next_id}"
        return ArticleView(
            id=next_id,
            title=f"Story {next_id}: what changed in {section} this week, and what did not",
            url=f"https://news.example.org/{slug}?ref=feed",
            section=section,
            published_at=end - timedelta(hours=next_id),
            author="Ines Calloway",
            dek=DEK,
            image_url=f"https://img.news.example.org/{slug}.jpg",
            image_alt=f"A photograph for story {next_id}",
            image_credit="Maren Holt / Tidewater",
        )

    sections = tuple(
        SectionBlock(name, tuple(article(name) for _ in range(per_section))) for name in SECTIONS
    )
    extra = tuple(article(SECTIONS[i % len(SECTIONS)]) for i in range(more))
    return IssueContent(
        number=47,
        window_start=end - timedelta(days=7),
        window_end=end,
        label="2025-W47",
        sections=sections,
        more=extra,
        intro="This week: **ferries, frost and fishing quotas**.",
    )


def main() -> None:
    """Run the benchmark and print one line per figure."""
    parser = argparse.ArgumentParser(description="Benchmark issue rendering.")
    parser.add_argument("--per-section", type=int, default=4, help="articles in each section")
    parser.add_argument("--more", type=int, default=8, help="articles in 'more stories'")
    parser.add_argument("--repeat", type=int, default=15, help="compiles to take the median of")
    parser.add_argument("--messages", type=int, default=50_000, help="recipients to personalise")
    parser.add_argument("--layout", choices=("cards", "full"), default="cards",
                        help="the layout setting to render")
    args = parser.parse_args()

    settings = Settings(
        base_url="https://news.example.org",
        postal_address="1 Example Street, Springfield 12345",
        utm_source="digest",
        layout=args.layout,
    )
    content = make_content(args.per_section, args.more)

    totals, mjml_only = [], []
    compiled = None
    for _ in range(args.repeat):
        renderer = Renderer(settings)  # a fresh renderer: no cached variant
        started = time.perf_counter()
        compiled = renderer.compile(content)
        totals.append(time.perf_counter() - started)
        mjml_only.append(compiled.report.compile_seconds)
    assert compiled is not None
    report = compiled.report

    recipients = [
        Recipient(
            email=f"reader{i}@example.net",
            name=f"Reader {i}",
            unsubscribe_url=f"https://news.example.org/unsubscribe/{i:020d}.signature-part",
            preferences_url=f"https://news.example.org/preferences/{i:020d}.signature-part",
            view_url=f"https://news.example.org/view/47?s={i:020d}",
        )
        for i in range(args.messages)
    ]
    started = time.perf_counter()
    out_bytes = 0
    for recipient in recipients:
        html_body, text_body = personalise(compiled, recipient)
        out_bytes += len(html_body) + len(text_body)
    elapsed = time.perf_counter() - started

    print(f"articles: {content.article_count} ({args.per_section}/section, {args.more} more), "
          f"layout {args.layout}")
    print(
        f"compile (Jinja+MJML+post-process), median of {args.repeat}: "
        f"{statistics.median(totals) * 1000:.1f} ms"
    )
    print(f"  of which MJML, median: {statistics.median(mjml_only) * 1000:.1f} ms")
    print(f"size-gate compiles: {report.compiles}")
    print(
        f"HTML (worst-case recipient): {report.html_bytes:,} bytes; "
        f"before whitespace collapse {report.uncollapsed_html_bytes:,} bytes; "
        f"saved {report.collapse_saving:,} bytes "
        f"({report.collapse_saving / report.uncollapsed_html_bytes:.1%})"
    )
    print(f"head CSS: {report.head_css_bytes:,} bytes; text part: {report.text_bytes:,} bytes")
    print(
        f"personalise: {args.messages:,} HTML+text bodies in {elapsed:.2f} s = "
        f"{args.messages / elapsed:,.0f} bodies/s "
        f"({out_bytes / elapsed / 1e9:.2f} GB/s of output)"
    )


if __name__ == "__main__":
    main()
