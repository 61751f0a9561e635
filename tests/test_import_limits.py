"""`digest import URL`: a total deadline and a size cap, against a real server on loopback.

A server that trickles one byte every half second answers every single read in time, so a
per-read timeout never fires; only a deadline for the whole download stops it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from click.testing import CliRunner

from digest.cli import main
from tests.conftest import serve_http

BIG = json.dumps([
    {"title": f"Story {i}", "url": f"https://news.example.org/{i}",
     "published_at": datetime.now(UTC).isoformat(), "summary": "x" * 200}
    for i in range(40)
]).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # no Content-Length needed: the body ends at close

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.path == "/big-declared":
            self.send_header("Content-Length", str(len(BIG)))
        self.end_headers()
        if self.path.startswith("/big"):
            self.wfile.write(BIG)
            return
        # /trickle: one byte every 0.5 s, for at most 60 s.
        for _ in range(120):
            try:
                self.wfile.write(b" ")
                self.wfile.flush()
            except OSError:
                return  # the client gave up
            time.sleep(0.5)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    with serve_http(_Handler) as url:
        yield url


def test_a_trickling_server_is_cut_off_at_the_total_deadline(
    runner: CliRunner, tmp_path: Path, server: str
) -> None:
    started = time.monotonic()
    result = runner.invoke(main, ["import", f"{server}/trickle", "--timeout", "3"])
    elapsed = time.monotonic() - started
    assert result.exit_code == 1, result.output
    assert (f"{server}/trickle: not received within 3 seconds (the --timeout / import_timeout "
            "deadline for the whole download); nothing was imported") in result.output
    # The deadline plus one trickle interval, with room for a loaded machine.
    assert elapsed < 6, elapsed


def test_the_deadline_and_the_cap_are_settings_too(
    runner: CliRunner, tmp_path: Path, server: str
) -> None:
    (tmp_path / "digest.toml").write_text("[import]\ntimeout = 2\nmax_bytes = 4096\n")
    started = time.monotonic()
    late = runner.invoke(main, ["import", f"{server}/trickle"])
    assert late.exit_code == 1 and "not received within 2 seconds" in late.output
    assert time.monotonic() - started < 5
    big = runner.invoke(main, ["import", f"{server}/big"])
    assert big.exit_code == 1
    assert "larger than 4096 bytes (--max-size / import_max_bytes)" in big.output
    # The flag wins over the setting.
    fine = runner.invoke(main, ["import", f"{server}/big", "--max-size", "1MB"])
    assert fine.exit_code == 0, fine.output
    assert "40 added" in fine.output


def test_a_body_over_the_cap_is_refused_with_or_without_a_length(
    runner: CliRunner, server: str
) -> None:
    for path in ("/big", "/big-declared"):
        result = runner.invoke(main, ["import", f"{server}{path}", "--max-size", "1KB"])
        assert result.exit_code == 1, result.output
        assert "larger than 1024 bytes" in result.output
    bad = runner.invoke(main, ["import", f"{server}/big", "--max-size", "lots"])
    assert bad.exit_code == 1
    assert "size 'lots' is not a size; write it like 5MB, 500KB or 100000" in bad.output
