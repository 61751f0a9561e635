"""What readers see, pinned: the demo issue in headless chromium at phone and desktop widths,
both layouts, light and dark, images on and off, compared with docs/screenshots/.

A visible change fails here until it is made on purpose. To accept a deliberate change,
regenerate the goldens and commit them with the change:

    DIGEST_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_render_golden.py

The pictures are deterministic: fixed demo data and date, photos generated from their URL
by a loopback server, the fonts Debian's chromium package installs.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from digest.render import Renderer, personalise
from tests.conftest import CHROMIUM_ARGS
from tests.demo_issue import DEMO_RECIPIENT, demo_content, demo_settings, photo_server

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
UPDATE = os.environ.get("DIGEST_UPDATE_GOLDEN") == "1"
LAYOUTS = ("cards", "full")
WIDTHS = (375, 700)
SCHEMES = ("light", "dark")
IMAGES = ("images", "no-images")
#: A pixel counts as changed when a colour channel moves by more than this (0-255) ...
CHANNEL_TOLERANCE = 48
#: ... and the screenshot fails when more than this share of its pixels changed.
CHANGED_SHARE = 0.002


def golden_name(layout: str, width: int, scheme: str, images: str) -> str:
    """docs/screenshots/<layout>-<width>-<scheme>-<images>.png"""
    return f"{layout}-{width}-{scheme}-{images}.png"


@pytest.fixture(scope="module")
def demo_pages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], str]]:
    """The demo issue's HTML per layout (photos from a loopback server), and that server."""
    with photo_server() as base:
        pages = {}
        for layout in LAYOUTS:
            settings = demo_settings(layout=layout)
            folder = tmp_path_factory.mktemp(layout)
            content = demo_content(folder, settings, image_base=base)
            pages[layout] = personalise(Renderer(settings).compile(content), DEMO_RECIPIENT)[0]
        yield pages, base


def shoot(browser: Any, markup: str, width: int, scheme: str, images: bool) -> tuple[bytes, int]:
    """A full-page PNG of markup and its height; only loopback photos load, and only if asked."""
    from playwright.sync_api import Route

    def route(route: Route) -> None:
        url = route.request.url
        if images and url.startswith("http://127.0.0.1:"):
            route.continue_()
        else:
            route.abort()

    page = browser.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme,
                            device_scale_factor=1)
    try:
        page.route("**/*", route)
        page.set_content(markup, wait_until="load")
        page.evaluate("document.fonts.ready")
        height: int = page.evaluate("document.documentElement.scrollHeight")
        return page.screenshot(full_page=True, animations="disabled"), height
    finally:
        page.close()


def changed_share(current: bytes, golden: Path) -> float:
    """The share of pixels that differ visibly; 1.0 when the sizes differ."""
    from PIL import Image, ImageChops

    now = Image.open(io.BytesIO(current)).convert("RGB")
    before = Image.open(golden).convert("RGB")
    if now.size != before.size:
        return 1.0
    diff = ImageChops.difference(now, before).convert("L")
    changed = sum(diff.point(lambda v: 255 if v > CHANNEL_TOLERANCE else 0).histogram()[255:])
    return changed / (now.size[0] * now.size[1])


def test_the_demo_issue_looks_as_the_goldens_show(
    chromium_path: str, demo_pages: tuple[dict[str, str], str]
) -> None:
    pytest.importorskip("PIL", reason="Pillow is in the test extra: pip install -e '.[test]'")
    from playwright.sync_api import sync_playwright

    pages, _ = demo_pages
    heights: dict[str, int] = {}
    failures = []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path,
                                    args=[*CHROMIUM_ARGS, "--hide-scrollbars"])
        try:
            for layout in LAYOUTS:
                for width in WIDTHS:
                    for scheme in SCHEMES:
                        for images in IMAGES:
                            name = golden_name(layout, width, scheme, images)
                            png, heights[name] = shoot(
                                browser, pages[layout], width, scheme, images == "images"
                            )
                            golden = SCREENSHOTS / name
                            if UPDATE:
                                golden.write_bytes(png)
                                continue
                            if not golden.exists():
                                failures.append(f"{name}: no golden yet")
                                continue
                            share = changed_share(png, golden)
                            if share > CHANGED_SHARE:
                                (golden.parent / f"{golden.stem}.actual.png").write_bytes(png)
                                failures.append(f"{name}: {share:.1%} of pixels changed")
        finally:
            browser.close()
    assert not failures, (
        "The rendered issue changed visibly (the new picture is saved beside each golden as "
        "*.actual.png). If the change is deliberate, run DIGEST_UPDATE_GOLDEN=1 pytest "
        "tests/test_render_golden.py and commit docs/screenshots/: " + "; ".join(failures)
    )
    # The default layout keeps a full 24-article issue short on a desktop.
    assert heights[golden_name("cards", 700, "light", "images")] <= 4000
    # With images off the layout keeps its shape: each photo holds its box (to a rounding
    # pixel or so per photo), rather than collapsing to its alt text's height.
    for layout in LAYOUTS:
        for width in WIDTHS:
            on = heights[golden_name(layout, width, "light", "images")]
            off = heights[golden_name(layout, width, "light", "no-images")]
            assert abs(on - off) <= 24, (layout, width, on, off)
