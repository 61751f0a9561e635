"""digest send in a real terminal: what it says comes in the order a person reads it."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from digest.config import Settings
from digest.db import Database
from tests.conftest import digest_env, seed_articles, seed_subscribers, send_window

DIGEST = Path(sys.executable).with_name("digest")


def run_in_a_terminal(args: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run the real digest command with stdout and stderr on a pseudo-terminal; its output."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen([str(DIGEST), *args], stdin=subprocess.DEVNULL, stdout=terminal,
                               stderr=terminal, env=env, cwd=cwd)
    os.close(terminal)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1.0)
        if not ready:
            if process.poll() is not None:
                break
            continue
        try:
            data = os.read(controller, 65536)
        except OSError:  # the terminal closed: the command exited
            break
        if not data:
            break
        chunks.append(data)
    process.wait(timeout=30)
    os.close(controller)
    return b"".join(chunks).decode()


def test_created_line_comes_before_the_progress_bar(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    seed_articles(db, send_window(settings), 2)
    seed_subscribers(db, 40)
    env = digest_env(settings.replace(backend="file"),
                     DIGEST_FILE_DIR=str(tmp_path / "outbox"), DIGEST_SEND_INFLIGHT="10")
    output = run_in_a_terminal(["send", "--week", "2025-W47"], env, tmp_path)
    created = output.find("Created issue 1 (2025-W47) with 40 deliveries.")
    progress = output.find("\rIssue 1 (2025-W47): ")
    assert created >= 0 and progress >= 0, output
    assert created < progress, output
    assert "Issue 1 (2025-W47): 40 sent, 0 failed, 0 pending" in output
