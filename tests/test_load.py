"""Load: sign-ups through a real `digest serve` while `digest send` delivers 20,000 messages,
both on one SQLite file (the subscribe issue's acceptance check).

Expected: no "database is locked" anywhere, every post answered normally (202 JSON, 303
form), every accepted address stored as pending, every delivery sent once. The run itself
lives in bench/bench_load.py, which prints the same figures on its own.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from bench.bench_load import EXPECTED, LoadResult, run_load

pytestmark = pytest.mark.slow

READERS = 20_000
CLIENTS = 4
MAX_POSTS = 3000
#: Fewer posts than this answered during the deliveries means the two did not really overlap.
MIN_POSTS_DURING_SEND = 50
PROBLEMS = ("database is locked", "Traceback", "OperationalError")


def request_lines(log: str) -> list[dict[str, object]]:
    """The access-log lines (JSON) of digest serve."""
    found = []
    for line in log.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == "request":
                found.append(entry)
    return found


@pytest.fixture(scope="module")
def load(tmp_path_factory: pytest.TempPathFactory) -> LoadResult:
    folder: Path = tmp_path_factory.mktemp("load")
    result = run_load(folder, readers=READERS, clients=CLIENTS, max_posts=MAX_POSTS,
                      max_seconds=120.0)
    print()
    for line in result.lines():
        print(line)
    return result


def test_send_completes_every_delivery_exactly_once(load: LoadResult) -> None:
    assert load.send_returncode == 0, load.send_stderr[-3000:]
    assert load.deliveries == {"sent": READERS}
    assert load.message_ids == READERS


def test_every_post_gets_the_normal_answer(load: LoadResult) -> None:
    answers = Counter((p.kind, p.status) for p in load.posts)
    assert set(answers) <= set(EXPECTED.items()), answers  # no 0 (no answer), 429 or 5xx
    assert {kind for kind, _ in answers} == {"json", "form"}
    # The server saw exactly those requests and answered them the same way.
    requests = [r for r in request_lines(load.serve_log) if r["path"] == "/subscribe"]
    assert len(requests) == len(load.posts)
    assert Counter(r["status"] for r in requests) == Counter(p.status for p in load.posts)


def test_no_lost_rows(load: LoadResult) -> None:
    posted = {p.address for p in load.posts}
    assert len(posted) == len(load.posts)
    assert load.pending_posted == posted
    assert load.subscribers_by_status == {"active": READERS, "pending": len(posted)}
    # SIGTERM let the mailer finish: one confirmation email per accepted sign-up.
    assert load.confirmations == len(posted)
    assert "confirmation_dropped" not in load.serve_log
    assert "confirmation_failed" not in load.serve_log


def test_no_locking_errors_or_tracebacks(load: LoadResult) -> None:
    for problem in PROBLEMS:
        assert problem not in load.send_stderr, load.send_stderr[-3000:]
        assert problem not in load.serve_log, load.serve_log[-3000:]
    assert '"unhandled error"' not in load.serve_log


def test_posts_and_send_overlapped(load: LoadResult) -> None:
    assert load.send_started < load.first_sent <= load.last_sent < load.send_ended
    assert load.posts[0].started < load.first_sent  # sign-ups were running before the send
    during = load.during_send
    assert len(during) >= MIN_POSTS_DURING_SEND, load.lines()
    # Posts kept coming until the send was done (or the post bound was reached first).
    assert len(load.posts) == MAX_POSTS or max(p.finished for p in load.posts) > load.last_sent
