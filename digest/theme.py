"""The publication's look from settings: colours, fonts, logo, and the WCAG contrast gate."""

from __future__ import annotations

from dataclasses import dataclass

from digest.config import Settings

#: WCAG 2.x level AA minimum contrast for body text (success criterion 1.4.3).
AA_BODY_TEXT = 4.5


@dataclass(frozen=True, slots=True)
class Palette:
    """One colour scheme: every colour a template may use, as #rrggbb."""

    accent: str
    text: str
    background: str
    surface: str
    muted: str
    link: str
    rule: str


@dataclass(frozen=True, slots=True)
class Theme:
    """What the templates read as ``theme``: light and dark palettes, fonts and the logo."""

    light: Palette
    dark: Palette
    heading_font: str
    body_font: str
    logo_url: str
    logo_width: int
    logo_height: int
    logo_alt: str


def full_hex(colour: str) -> str:
    """#abc as #aabbcc, lower case; #rrggbb lower-cased."""
    digits = colour.strip().lstrip("#").lower()
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return "#" + digits


def _palette(settings: Settings, prefix: str) -> Palette:
    return Palette(**{
        name: full_hex(getattr(settings, f"{prefix}{name}"))
        for name in ("accent", "text", "background", "surface", "muted", "link", "rule")
    })


def theme_of(settings: Settings) -> Theme:
    """The theme settings as the templates see them (colours normalised to #rrggbb)."""
    return Theme(
        light=_palette(settings, "theme_"),
        dark=_palette(settings, "theme_dark_"),
        heading_font=settings.theme_heading_font.strip(),
        body_font=settings.theme_body_font.strip(),
        logo_url=settings.theme_logo_url.strip(),
        logo_width=settings.theme_logo_width,
        logo_height=settings.theme_logo_height,
        logo_alt=settings.theme_logo_alt.strip() or settings.newsletter_name,
    )


def relative_luminance(colour: str) -> float:
    """WCAG 2.x relative luminance of an sRGB colour written #rrggbb or #rgb."""
    digits = full_hex(colour)[1:]
    channels = []
    for i in (0, 2, 4):
        value = int(digits[i : i + 2], 16) / 255
        channels.append(value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4)
    red, green, blue = channels
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def contrast_ratio(first: str, second: str) -> float:
    """WCAG contrast ratio between two colours, from 1 (same) to 21 (black on white)."""
    a, b = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (a + 0.05) / (b + 0.05)


#: (foreground, background) palette fields that carry text in the templates.
TEXT_PAIRS = (
    ("text", "surface"),
    ("text", "background"),
    ("muted", "surface"),
    ("muted", "background"),
    ("link", "surface"),
    ("link", "background"),
    ("accent", "surface"),
    ("accent", "background"),
    ("surface", "text"),  # the "full" layout's button: surface-coloured text on text colour
)


def contrast_problems(settings: Settings) -> list[str]:
    """Sentences for every text colour pair below WCAG AA (4.5:1), light and dark."""
    theme = theme_of(settings)
    problems = []
    for scheme, palette, prefix in (
        ("light", theme.light, "theme_"),
        ("dark", theme.dark, "theme_dark_"),
    ):
        for fore, back in TEXT_PAIRS:
            fg, bg = getattr(palette, fore), getattr(palette, back)
            ratio = contrast_ratio(fg, bg)
            if ratio < AA_BODY_TEXT:
                problems.append(
                    f"{prefix}{fore} {fg} on {prefix}{back} {bg} has a contrast of "
                    f"{ratio:.2f}:1 ({scheme} mode), below WCAG AA's {AA_BODY_TEXT}:1 for body "
                    f"text; darken or lighten one of them in the [theme] table."
                )
    return problems
