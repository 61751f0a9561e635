"""The pre-send check: errors block an issue that would clip, leak, break links or break the
law; warnings point at things an editor should look at."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from digest.checks import CheckReport, check_issue
from digest.config import Settings
from digest.issues import IssueContent, SectionBlock
from digest.render import Renderer, default_templates_dir
from tests.conftest import make_article, make_issue_content


def run(settings: Settings, content: IssueContent) -> CheckReport:
    return check_issue(Renderer(settings).compile(content), content, settings)


def override(tmp_path: Path, partial: str, old: str, new: str) -> str:
    """A templates_dir holding a shipped partial with old replaced by new (edits add up)."""
    target = tmp_path / "partials" / partial
    source = target if target.exists() else default_templates_dir() / "partials" / partial
    text = source.read_text()
    assert old in text
    target.parent.mkdir(exist_ok=True)
    target.write_text(text.replace(old, new))
    return str(tmp_path)


def test_a_good_issue_passes_with_size_notes(
    render_settings: Settings, issue_content: IssueContent
) -> None:
    report = run(render_settings, issue_content)

    assert report.ok, report.lines()
    assert report.errors == []
    assert report.warnings == []
    assert any("under Gmail's 102,000-byte clip limit" in n for n in report.notes)
    assert any(n.startswith("The head CSS is") for n in report.notes)
    assert report.lines() == [f"warning: {a}" for a in report.advisories] + [
        f"note: {n}" for n in report.notes
    ]


def test_an_empty_issue_is_an_error(render_settings: Settings) -> None:
    content = make_issue_content(sections=(), more=0)
    report = run(render_settings, content)
    assert not report.ok
    assert "The issue has no articles; import articles or widen the window." in report.errors


def test_an_empty_variant_is_an_error(
    render_settings: Settings, issue_content: IssueContent
) -> None:
    compiled = Renderer(render_settings).compile(issue_content, {"Sport"})
    report = check_issue(compiled, issue_content, render_settings)
    assert any("section variant has no articles" in e for e in report.errors)


def test_empty_sections_are_a_warning(render_settings: Settings) -> None:
    content = make_issue_content()
    content = dataclasses.replace(content, sections=(*content.sections, SectionBlock("Sport", ())))
    report = run(render_settings, content)
    assert report.ok
    assert "Section “Sport” has no articles this issue." in report.warnings


def test_missing_postal_address_is_an_error(
    render_settings: Settings, issue_content: IssueContent
) -> None:
    report = run(dataclasses.replace(render_settings, postal_address=""), issue_content)
    assert any(e.startswith("postal_address is not set") for e in report.errors)


def test_a_template_without_unsubscribe_or_address_is_an_error(
    render_settings: Settings, issue_content: IssueContent, tmp_path: Path
) -> None:
    folder = override(
        tmp_path,
        "footer.mjml.j2",
        'href="{{ slot.unsubscribe_url }}"',
        'href="https://news.example.org/help"',
    )
    folder = override(tmp_path, "footer.mjml.j2", "{% if postal_lines %}", "{% if false %}")
    report = run(dataclasses.replace(render_settings, templates_dir=folder), issue_content)
    assert (
        "The HTML part has no unsubscribe link; the templates must link slot.unsubscribe_url."
        in report.errors
    )
    assert any("HTML part does not show postal_address" in e for e in report.errors)
    assert not any("text part" in e for e in report.errors)


def test_images_without_alt_text_are_a_warning(render_settings: Settings, tmp_path: Path) -> None:
    article = make_article(1, "Europe", image_alt="")
    content = dataclasses.replace(
        make_issue_content(sections=(), more=0), sections=(SectionBlock("Europe", (article,)),)
    )
    report = run(render_settings, content)
    assert "1 article image(s) have no alt text of their own; the headline stands in." in (
        report.warnings
    )

    folder = override(tmp_path, "image.mjml.j2", 'alt="{{ a.image_alt }}"', 'alt=""')
    report = run(dataclasses.replace(render_settings, templates_dir=folder), content)
    assert "1 image(s) have no alt text." in report.warnings


def test_http_links_warn_and_relative_links_fail(
    render_settings: Settings, issue_content: IssueContent, tmp_path: Path
) -> None:
    plain = dataclasses.replace(render_settings, base_url="http://news.example.org")
    report = run(plain, issue_content)
    assert report.errors == []
    # An http base_url also puts an http one-click link in List-Unsubscribe (test_reputation).
    assert len(report.overridable) == 1
    assert any("use http:// rather than https://" in w for w in report.warnings)

    folder = override(
        tmp_path,
        "footer.mjml.j2",
        "Update your preferences</a>",
        'Update your preferences</a> · <a href="/about">About us</a>',
    )
    report = run(dataclasses.replace(render_settings, templates_dir=folder), issue_content)
    assert any("relative link '/about'" in e for e in report.errors)


def test_articles_shown_without_a_link_are_named(render_settings: Settings) -> None:
    article = make_article(5, "Europe", url="javascript:alert(1)")
    content = dataclasses.replace(
        make_issue_content(sections=(), more=0), sections=(SectionBlock("Europe", (article,)),)
    )
    report = run(render_settings, content)
    assert report.ok
    assert f"Article “{article.title}” has no usable http(s) link and is shown without one." in (
        report.warnings
    )


def test_an_issue_over_the_gmail_clip_is_an_error(render_settings: Settings) -> None:
    # A budget above the clip limit turns the size gate off, as a misconfiguration would.
    settings = dataclasses.replace(render_settings, html_size_budget=10_000_000)
    report = run(settings, make_issue_content(per_section=12, long_summaries=True))
    assert not report.ok
    assert any("over Gmail's 102,000-byte clip limit" in e for e in report.errors)


def test_size_gate_trimming_is_reported(render_settings: Settings) -> None:
    report = run(render_settings, make_issue_content(per_section=20, long_summaries=True))
    assert report.ok, report.errors
    assert any("“More stories”" in w for w in report.warnings)
    assert any(w.startswith("Shortened") for w in report.warnings)


def test_too_much_head_css_is_an_error(
    render_settings: Settings, issue_content: IssueContent, tmp_path: Path
) -> None:
    bulk = "\n".join(f".dg-unused-{i} {{ color: #123456; }}" for i in range(700))
    folder = override(tmp_path, "theme.mjml.j2", "<mj-style>", f"<mj-style>{bulk}")
    report = run(dataclasses.replace(render_settings, templates_dir=folder), issue_content)
    assert any("head CSS" in e and "Gmail drops" in e for e in report.errors)


def test_an_unsafe_template_override_is_caught(render_settings: Settings, tmp_path: Path) -> None:
    # Writing article text into an MJML attribute is exactly what mjml 0.12 turns into
    # attribute injection; the check is the backstop for such overrides.
    folder = override(
        tmp_path, "lead.mjml.j2",
        '<mj-text padding="0" css-class="dg-text">{{ picture(a, 600) }}</mj-text>',
        '<mj-image src="{{ a.image_src }}" alt="{{ a.title }}"></mj-image>',
    )
    article = make_article(1, "Europe", title='x" onerror="alert(1)')
    content = dataclasses.replace(
        make_issue_content(sections=(), more=0), sections=(SectionBlock("Europe", (article,)),)
    )
    report = run(dataclasses.replace(render_settings, templates_dir=folder), content)
    assert any("event handler attribute onerror=" in e for e in report.errors)


def test_theme_colours_below_wcag_aa_are_an_error(
    render_settings: Settings, issue_content: IssueContent
) -> None:
    assert run(render_settings, issue_content).ok  # the default theme passes AA
    pale = dataclasses.replace(render_settings, theme_muted="#aaaaaa")
    report = run(pale, issue_content)
    assert not report.ok
    assert any(
        e.startswith("theme_muted #aaaaaa on theme_surface #ffffff has a contrast of 2.32:1")
        and "below WCAG AA's 4.5:1" in e
        for e in report.errors
    )
    dark = dataclasses.replace(render_settings, theme_dark_text="#333333")
    assert any("(dark mode)" in e for e in run(dark, issue_content).errors)
