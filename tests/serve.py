"""Helpers for tests that run `digest serve` for real: a subprocess on a loopback port, and
small static sites and reverse proxies on other ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """predicate()'s first truthy value, polled every 0.1 s for at most timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def serve_env(**settings: str) -> dict[str, str]:
    """This process's environment without DIGEST_*, plus DIGEST_<NAME> for each setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update({f"DIGEST_{name.upper()}": value for name, value in settings.items()})
    return env


def run_digest(args: list[str], env: dict[str, str], cwd: Path) -> str:
    """`python -m digest ARGS`; its stdout (raises if it fails)."""
    return subprocess.run([sys.executable, "-m", "digest", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=True).stdout


@contextmanager
def digest_serve(folder: Path, port: int, env: dict[str, str]) -> Iterator[Path]:
    """`digest serve --port PORT` in a subprocess until /healthz answers; yields its log."""
    log = folder / f"serve-{port}.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "digest", "serve", "--port", str(port), "--workers", "4"],
            env=env, cwd=folder, stdout=log_file, stderr=subprocess.STDOUT,
        )
    try:
        def healthy() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz",
                                            timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_for(healthy, 30, "digest serve to answer /healthz")
        yield log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def static_site(folder: Path, port: int) -> Iterator[str]:
    """Serve folder on 127.0.0.1:port (another origin than digest serve); yields its origin."""
    httpd = ThreadingHTTPServer(("127.0.0.1", port), partial(_QuietHandler, directory=str(folder)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
