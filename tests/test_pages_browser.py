"""How the public pages look in a real browser (headless Debian chromium): section checkboxes
stay with their labels at phone and desktop widths, the footer is centred like the content,
dark mode follows prefers-color-scheme, and every colour is set in one place."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from digest import subscribers, tokens
from digest.config import Settings
from digest.db import Database
from tests.conftest import CHROMIUM_ARGS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NAME = "The Audit Dispatch"
SECTIONS = ("Europe", "Latin America", "Asia-Pacific", "Military Industrial Complex",
            "Science and Technology", "Arts", "Climate", "Business")
WIDTHS = (375, 1280)


@pytest.fixture
def site(sqlite_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The web app on a real HTTP server in this process; yields its URL and a preferences path."""
    from digest.web import create_app

    settings = Settings(
        database_url=sqlite_url, secret_key=("pages-browser-secret-0123456789",),
        newsletter_name=NAME, base_url="http://127.0.0.1", sections=SECTIONS,
        postal_address="12 Harbour Lane, Portsmouth PO1 2AB, United Kingdom",
        backend="memory",
    )
    db = Database(sqlite_url)
    with db.write() as session:
        reader = subscribers.add(session, "pages@example.org", sections=["Arts"]).subscriber
    preferences = tokens.preferences_url(settings, reader).replace(settings.base_url, "")
    app = create_app(settings, {"DIGEST_DATABASE": db, "DIGEST_MAIL_BACKGROUND": False})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", preferences
    finally:
        server.shutdown()
        thread.join(timeout=5)
        db.dispose()


@pytest.fixture
def browser(chromium_path: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


# Each section's checkbox and the first line of its name, and where main and footer sit.
_GEOMETRY = """() => ({
  choices: [...document.querySelectorAll('input[type=checkbox]')].map(box => {
    const label = document.querySelector(`label[for="${box.id}"]`);
    const text = [...label.querySelectorAll('span')].pop() || label;
    const b = box.getBoundingClientRect(), t = text.getClientRects()[0];
    return {name: label.textContent.trim(), box: [b.left, b.top, b.right, b.bottom],
            text: [t.left, t.top, t.right, t.bottom]};
  }),
  main: (r => [r.left, r.right])(document.querySelector('main').getBoundingClientRect()),
  footer: (r => [r.left, r.right])(document.querySelector('footer').getBoundingClientRect()),
})"""


@pytest.mark.parametrize("width", WIDTHS)
def test_checkboxes_stay_with_their_labels_and_the_footer_is_centred(
    site: tuple[str, str], browser: Any, width: int
) -> None:
    base, preferences = site
    page = browser.new_page(viewport={"width": width, "height": 900})
    for path in ("/subscribe", preferences):
        page.goto(base + path)
        geometry = page.evaluate(_GEOMETRY)
        assert len(geometry["choices"]) == len(SECTIONS)
        for choice in geometry["choices"]:
            box, text = choice["box"], choice["text"]
            # The name starts on the checkbox's line, just to its right.
            assert text[1] < box[3] and box[1] < text[3], (width, path, choice)
            assert 0 <= text[0] - box[2] <= 16, (width, path, choice)
        main, footer = geometry["main"], geometry["footer"]
        assert abs((main[0] + main[1]) / 2 - (footer[0] + footer[1]) / 2) <= 1, geometry
        assert abs(footer[0] - main[0]) <= 1, geometry  # the same column, not the page edge
    page.close()


def _background(page: Any) -> str:
    return str(page.evaluate("getComputedStyle(document.body).backgroundColor"))


def test_dark_mode_follows_prefers_color_scheme(site: tuple[str, str], browser: Any) -> None:
    base, preferences = site
    light = browser.new_page(color_scheme="light")
    dark = browser.new_page(color_scheme="dark")
    for path in ("/subscribe", preferences, "/subscribe/thanks"):
        light.goto(base + path)
        dark.goto(base + path)
        assert _background(light) == "rgb(244, 241, 234)"
        assert _background(dark) == "rgb(18, 18, 18)"
        text = dark.evaluate("getComputedStyle(document.querySelector('h1')).color")
        assert text == "rgb(232, 230, 227)"  # light text on the dark page, not the default


def test_every_colour_is_a_custom_property_in_one_place(site: tuple[str, str],
                                                        browser: Any) -> None:
    base, _ = site
    page = browser.new_page()
    page.goto(base + "/subscribe")
    css = page.evaluate("[...document.querySelectorAll('style')].map(s => s.textContent)"
                        ".join('\\n')")
    colours = re.findall(r"(--[\w-]+\s*:\s*)?(#[0-9a-fA-F]{3,8}\b|rgba?\()", css)
    assert colours, css
    assert all(prop for prop, _ in colours), "a colour outside a --digest-* property"
    # And the page itself has no inline colour of its own.
    assert page.evaluate("[...document.querySelectorAll('[style]')]"
                         ".filter(e => /#|rgb/.test(e.getAttribute('style'))).length") == 0
