"""`digest check --fetch-images`: photos that would not load are warned about, only when asked."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from digest.cli import main
from digest.db import Database
from digest.issues import parse_week
from digest.models import Article

WEEK = "2025-W47"


class ImageHost(ThreadingHTTPServer):
    """A loopback image host: /ok.png loads, /gone.png is 404, /page.png is HTML, /slow.png
    answers after 2 s. Counts requests so a test can see that nothing was fetched."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[str] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: ImageHost

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        if self.path == "/slow.png":
            time.sleep(2)
        if self.path == "/gone.png":
            self.send_error(404, "Not Found")
            return
        kind = "text/html" if self.path == "/page.png" else "image/png"
        body = b"<html></html>" if kind == "text/html" else b"\x89PNG\r\n\x1a\n"
        try:
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # /slow.png: the check gave up waiting, as it should

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def image_host() -> Iterator[ImageHost]:
    server = ImageHost()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def env(tmp_path: Path, image_host: ImageHost) -> dict[str, str]:
    url = f"sqlite:///{tmp_path / 'subscribers.db'}"
    db = Database(url)
    start = parse_week(WEEK, UTC).start
    with db.write() as session:
        for i, name in enumerate(("ok", "gone", "page", "slow")):
            session.add(Article(
                url=f"https://news.example.org/story-{i}", title=f"Headline number {i}",
                section="Europe", author="Writer", summary="Summary.",
                image_url=f"{image_host.base}/{name}.png", image_alt=f"Picture {i}",
                published_at=start + timedelta(hours=10 + i),
            ))
    db.dispose()
    return {
        "DIGEST_DATABASE_URL": url,
        "DIGEST_SECRET_KEY": "images-test-key-0123",
        "DIGEST_POSTAL_ADDRESS": "1 Example Street, Springfield",
        "DIGEST_BASE_URL": "https://news.example.org",
        "DIGEST_FROM_EMAIL": "weekly@news.example.org",
    }


def test_check_fetches_nothing_unless_asked(
    runner: CliRunner, env: dict[str, str], image_host: ImageHost
) -> None:
    result = runner.invoke(main, ["check", "--week", WEEK], env=env)
    assert result.exit_code == 0, result.output
    assert "does not load" not in result.output
    assert image_host.requests == []


def test_fetch_images_warns_about_each_photo_that_does_not_load(
    runner: CliRunner, env: dict[str, str], image_host: ImageHost
) -> None:
    result = runner.invoke(
        main, ["check", "--week", WEEK, "--fetch-images", "--image-timeout", "0.5"], env=env
    )
    base = image_host.base
    # Warnings, not errors: a slow image host should not stop a send by itself.
    assert result.exit_code == 0, result.output
    assert f"warning: The image {base}/gone.png does not load: HTTP 404 Not Found." in (
        result.output
    )
    assert f"warning: The image {base}/page.png does not load: not an image (text/html)." in (
        result.output
    )
    assert (
        f"warning: The image {base}/slow.png does not load: no answer within 0.5 seconds."
        in result.output
    )
    assert f"{base}/ok.png does not load" not in result.output
    assert "note: Fetched 4 image(s): 1 load, 3 do not." in result.output
    assert sorted(image_host.requests) == ["/gone.png", "/ok.png", "/page.png", "/slow.png"]
