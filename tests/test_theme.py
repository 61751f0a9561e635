"""The [theme] table: values checked when settings load, WCAG contrast, and the check gate."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from digest.cli import main
from digest.config import load_settings
from digest.errors import ConfigError
from digest.theme import contrast_ratio, theme_of
from tests.test_preview import WEEK, seed


def test_contrast_ratio_matches_wcag_reference_values() -> None:
    assert contrast_ratio("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast_ratio("#fff", "#fff") == pytest.approx(1.0)
    # #777 on white is the classic "just fails AA" grey; #767676 just passes.
    assert contrast_ratio("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)
    assert contrast_ratio("#767676", "#ffffff") == pytest.approx(4.54, abs=0.01)
    assert contrast_ratio("#ffffff", "#767676") == contrast_ratio("#767676", "#ffffff")


def test_the_theme_table_in_digest_toml_sets_theme_settings(tmp_path: Path) -> None:
    config = tmp_path / "digest.toml"
    config.write_text(
        '[theme]\naccent = "#036"\nbody_font = "\'Source Sans Pro\', Arial, sans-serif"\n'
        'logo_url = "https://www.example.org/logo.png"\nlogo_height = 40\n'
        'dark_background = "#000000"\n',
        encoding="utf-8",
    )
    loaded = load_settings(config, env={})
    theme = theme_of(loaded.settings)
    assert theme.light.accent == "#003366"
    assert theme.dark.background == "#000000"
    assert theme.body_font == "'Source Sans Pro', Arial, sans-serif"
    assert (theme.logo_url, theme.logo_width, theme.logo_height) == (
        "https://www.example.org/logo.png", 200, 40,
    )
    assert theme.logo_alt == loaded.settings.newsletter_name
    assert loaded.sources["theme_accent"] == str(config)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('accent = "red"', "theme_accent 'red' is not a colour; write it as #rrggbb or #rgb"),
        ('text = "#12345"', "theme_text '#12345' is not a colour"),
        ('body_font = "Arial; color: red"', "theme_body_font 'Arial; color: red' is not a font"),
        ('heading_font = "\\"Georgia\\""', "is not a font stack"),
        ('logo_url = "javascript:alert(1)"', "must be an absolute https:// URL"),
        ('logo_url = "https://www.example.org/l.png"', "theme_logo_height must be set"),
    ],
)
def test_theme_values_that_could_break_css_or_html_are_refused(
    tmp_path: Path, line: str, message: str
) -> None:
    config = tmp_path / "digest.toml"
    config.write_text(f"[theme]\n{line}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(config, env={})


def test_layout_and_image_size_settings_are_checked(tmp_path: Path) -> None:
    config = tmp_path / "digest.toml"
    config.write_text('layout = "magazine"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="layout 'magazine' must be one of cards, full"):
        load_settings(config, env={})
    with pytest.raises(ConfigError, match="image_height must be between 1 and 4000"):
        load_settings(None, env={"DIGEST_IMAGE_HEIGHT": "0"})


def test_digest_check_refuses_a_theme_below_wcag_aa(runner: CliRunner, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'subscribers.db'}"
    seed(url)
    env = {
        "DIGEST_DATABASE_URL": url,
        "DIGEST_SECRET_KEY": "theme-test-key-0123",
        "DIGEST_POSTAL_ADDRESS": "1 Example Street, Springfield",
        "DIGEST_BASE_URL": "https://news.example.org",
        "DIGEST_FROM_EMAIL": "weekly@news.example.org",
    }
    good = runner.invoke(main, ["check", "--week", WEEK], env=env)
    assert good.exit_code == 0, good.output

    pale = runner.invoke(main, ["check", "--week", WEEK],
                         env={**env, "DIGEST_THEME_ACCENT": "#e0a090"})
    assert pale.exit_code == 1
    assert (
        "error: theme_accent #e0a090 on theme_surface #ffffff has a contrast of 2.19:1 "
        "(light mode), below WCAG AA's 4.5:1 for body text" in pale.output
    )
