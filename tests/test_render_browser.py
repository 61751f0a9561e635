"""What a reader sees: the compiled issue in headless chromium at phone and desktop widths."""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from digest.config import Settings
from digest.personalise import Recipient
from digest.render import Renderer, personalise
from tests.conftest import CHROMIUM_ARGS, make_issue_content

pytestmark = pytest.mark.browser

RECIPIENT = Recipient(
    email="reader@example.net",
    name="Ada",
    unsubscribe_url="https://news.example.org/unsubscribe/tok",
    preferences_url="https://news.example.org/preferences/tok",
    view_url="https://news.example.org/view/47",
)


def tiny_png(width: int = 12, height: int = 8) -> bytes:
    """A small grey PNG, built here so the test needs no image file."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def image_server() -> Iterator[str]:
    """A loopback HTTP server answering every path with a tiny PNG."""
    png = tiny_png()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def issue_html(render_settings: Settings, image_server: str) -> str:
    """A four-section issue whose hero images come from the loopback server."""
    content = make_issue_content(
        per_section=2,
        more=5,
        image_base=image_server,
        intro="A short **editor's note** with [a link](https://news.example.org/methods).",
    )
    return personalise(Renderer(render_settings).compile(content), RECIPIENT)[0]


LAYOUT_JS = """
() => {
  const cols = [...document.querySelectorAll('.dg-more-col')].slice(0, 2)
    .map(el => el.getBoundingClientRect()).map(r => ({x: r.x, y: r.y, w: r.width}));
  const imgs = [...document.images].map(i => ({
    alt: i.getAttribute('alt'), loaded: i.complete && i.naturalWidth > 0,
    right: i.getBoundingClientRect().right}));
  return {
    cols, imgs,
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    background: getComputedStyle(document.body).backgroundColor,
  };
}
"""


def layout(chromium_path: str, markup: str, width: int, scheme: str = "light") -> dict[str, Any]:
    """Load markup at a viewport width and measure the layout; only loopback is reachable."""
    from playwright.sync_api import Route, sync_playwright

    def only_loopback(route: Route) -> None:
        if route.request.url.startswith(("http://127.0.0.1:", "data:", "about:")):
            route.continue_()
        else:
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme)
            page.route("**/*", only_loopback)
            page.set_content(markup, wait_until="load")
            result: dict[str, Any] = page.evaluate(LAYOUT_JS)
            return result
        finally:
            browser.close()


def test_more_stories_columns_stack_on_phones_and_sit_side_by_side_on_desktop(
    chromium_path: str, issue_html: str
) -> None:
    phone = layout(chromium_path, issue_html, 375)
    desktop = layout(chromium_path, issue_html, 700)

    left, right = phone["cols"]
    assert left["x"] == right["x"]
    assert right["y"] > left["y"]
    left, right = desktop["cols"]
    assert left["x"] < right["x"]
    assert left["y"] == right["y"]


@pytest.mark.parametrize("width", [375, 700])
def test_nothing_overflows_and_every_image_has_alt_text(
    chromium_path: str, issue_html: str, width: int
) -> None:
    result = layout(chromium_path, issue_html, width)

    assert result["scrollWidth"] <= result["innerWidth"]
    assert len(result["imgs"]) == 8
    for img in result["imgs"]:
        assert img["alt"] and img["alt"].strip()
        assert img["loaded"]  # served from the loopback server
        assert img["right"] <= width


def test_dark_mode_changes_the_background(chromium_path: str, issue_html: str) -> None:
    light = layout(chromium_path, issue_html, 700, "light")
    dark = layout(chromium_path, issue_html, 700, "dark")
    assert light["background"] == "rgb(244, 241, 234)"
    assert dark["background"] == "rgb(18, 18, 18)"
