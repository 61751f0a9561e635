"""The demo issue (digest demo's 24 sample articles) built on a fixed date, for the golden
screenshots, the size and height limits, and the MJML and SpamAssassin checks."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from digest.articles import import_records
from digest.config import Settings
from digest.db import Database
from digest.issues import IssueContent, select_issue, week_of
from digest.personalise import Recipient
from digest.sample_data import IMAGES, sample_articles

#: A Saturday: every sample article (up to 4.5 days old) falls inside ISO week 2025-W47.
DEMO_NOW = datetime(2025, 11, 22, 12, 0, tzinfo=UTC)
DEMO_BASE_URL = "https://newsletter.example.org"

DEMO_RECIPIENT = Recipient(
    email="ada.reader@example.com",
    name="Ada Reader",
    unsubscribe_url=f"{DEMO_BASE_URL}/u/demo-token",
    preferences_url=f"{DEMO_BASE_URL}/preferences/demo-token",
    view_url=f"{DEMO_BASE_URL}/archive/demo-token",
)


def demo_settings(**changes: Any) -> Settings:
    """The settings `digest demo` writes, with an https base URL as a real publication has."""
    values: dict[str, Any] = {
        "newsletter_name": "The Weekly Dispatch",
        "from_email": "dispatch@news.example.org",
        "from_name": "The Weekly Dispatch",
        "base_url": DEMO_BASE_URL,
        "postal_address": "The Weekly Dispatch, 12 Harbour Lane, Portsmouth PO1 2AB, "
                          "United Kingdom",
        "timezone": "Europe/London",
        "sections": ("Europe", "Latin America", "Asia-Pacific", "Middle East",
                     "Military Industrial Complex"),
    }
    values.update(changes)
    settings = Settings(**values)
    settings.validate()
    return settings


def demo_content(folder: Path, settings: Settings, image_base: str = IMAGES) -> IssueContent:
    """The demo week's issue, selected the way `digest demo` selects it, from a SQLite file
    in folder; photos point at image_base instead of the (unreachable) sample host."""
    records = sample_articles(DEMO_NOW)
    for record in records:
        if record["image_url"]:
            record["image_url"] = record["image_url"].replace(IMAGES, image_base)
    db = Database(f"sqlite:///{folder / 'demo.db'}")
    try:
        import_records(db, records, name="sample articles", now=DEMO_NOW)
        with db.read() as session:
            return select_issue(session, settings, week_of(DEMO_NOW, settings.tz), now=DEMO_NOW)
    finally:
        db.dispose()


def demo_photo(path: str, width: int = 1200, height: int = 675) -> bytes:
    """A PNG standing in for a photo: a colour and a stripe chosen from the path, so every
    story looks different and the same story always looks the same."""
    from PIL import Image, ImageDraw

    digest = hashlib.sha256(path.encode()).digest()
    base = (60 + digest[0] % 140, 70 + digest[1] % 120, 80 + digest[2] % 120)
    image = Image.new("RGB", (width, height), base)
    draw = ImageDraw.Draw(image)
    top = digest[3] % (height // 2)
    draw.rectangle((0, top, width, top + height // 3), fill=tuple(c + 40 for c in base))
    draw.ellipse((width // 2, height // 4, width // 2 + height // 2, height // 4 * 3),
                 fill=tuple(c // 2 for c in base))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@contextmanager
def photo_server() -> Iterator[str]:
    """A loopback HTTP server answering every path with its demo photo; yields its base URL."""
    cache: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = cache.get(self.path)
            if body is None:
                body = cache[self.path] = demo_photo(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/demo"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
