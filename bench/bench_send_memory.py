"""Peak memory of `digest send` as the list grows: flat means it does not depend on N.

For each N (active subscribers) a fresh SQLite file in a temporary folder gets 6 articles
in one ISO week and N subscribers (bulk inserts, as in bench_send.py), then
`python -m digest send --week W --quiet --ignore-check` runs as a child process with the console
backend writing to /dev/null (the memory backend keeps every message, so it would grow by
design). The child's peak resident set size comes from os.wait4 (ru_maxrss); every
delivery must be `sent` afterwards, so each figure is for a complete send.

Linux counts the parent's peak RSS into a child's ru_maxrss (the address space the child
had before exec), so this process stays small: it imports only the standard library and
seeds each database in a separate process (this script with --seed).

Run from the repository root:
    .venv/bin/python bench/bench_send_memory.py --sizes 5000,20000,80000
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEEK = "2025-W47"
SECTIONS = ("World", "Tech", "Science")  # as bench_send.seed writes them
SECRET = "bench-memory-secret-0123456789"
BASE_URL = "https://news.example.org"
#: Upper bound on one child process (seeding or sending), in seconds.
CHILD_TIMEOUT = 600.0


# ------------------------------------------------------------------------------ seeding


def seed(db_path: Path, subscribers: int, articles: int) -> None:
    """articles stories in WEEK and subscribers active readers, in bulk inserts.

    Runs in its own process (--seed), so the parent's RSS stays small.
    """
    # bench_send.seed fills the database the same way the send benchmark does.
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_send import seed as seed_database

    from digest.config import Settings
    from digest.db import Database
    from digest.issues import parse_week

    db = Database(f"sqlite:///{db_path}")
    try:
        seed_database(db, parse_week(WEEK, Settings().tz), subscribers, articles)
    finally:
        db.dispose()


# ------------------------------------------------------------------------------ children


@dataclass(frozen=True, slots=True)
class Child:
    """How one child process ended."""

    returncode: int
    seconds: float
    maxrss_kib: int  # ru_maxrss: KiB on Linux


def run_child(argv: list[str], env: dict[str, str], cwd: Path, stderr_path: Path,
              timeout: float = CHILD_TIMEOUT) -> Child:
    """Run argv with stdout to /dev/null; reap it with wait4 for its own rusage."""
    with stderr_path.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + timeout
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                seconds = time.perf_counter() - started
                proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
                return Child(proc.returncode, seconds, int(usage.ru_maxrss))
            if time.monotonic() > deadline:
                raise RuntimeError(f"{argv[1:4]} did not finish within {timeout:.0f} s")
            time.sleep(0.02)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)


def child_env(db_path: Path) -> dict[str, str]:
    """Environment for `python -m digest`: no DIGEST_* variable leaks in from ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update({
        "DIGEST_DATABASE_URL": f"sqlite:///{db_path}",
        "DIGEST_SECRET_KEY": SECRET,
        "DIGEST_BASE_URL": BASE_URL,
        "DIGEST_POSTAL_ADDRESS": "1 Example Street, Springfield",
        "DIGEST_FROM_EMAIL": "weekly@news.example.org",
        "DIGEST_SECTIONS": ",".join(SECTIONS),
        # Writes every message to stdout, which is /dev/null; keeps nothing.
        "DIGEST_BACKEND": "console",
        "PYTHONPATH": str(ROOT),
    })
    return env


def _wall(stored: str) -> float:
    # digest.models.UTCDateTime stores naive UTC text on SQLite.
    return datetime.fromisoformat(stored).replace(tzinfo=UTC).timestamp()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the database says after a send."""

    by_status: dict[str, int]
    message_ids: int
    delivery_seconds: float  # first to last delivery marked sent


def read_back(db_path: Path) -> Outcome:
    conn = sqlite3.connect(db_path)
    try:
        by_status = dict(conn.execute(
            "SELECT status, COUNT(*) FROM deliveries GROUP BY status"
        ).fetchall())
        message_ids = conn.execute(
            "SELECT COUNT(DISTINCT message_id) FROM deliveries"
        ).fetchone()[0]
        first, last = conn.execute(
            "SELECT MIN(sent_at), MAX(sent_at) FROM deliveries WHERE status = 'sent'"
        ).fetchone()
    finally:
        conn.close()
    seconds = _wall(last) - _wall(first) if first and last else 0.0
    return Outcome(by_status, int(message_ids), seconds)


@dataclass(frozen=True, slots=True)
class Run:
    n: int
    seed_seconds: float
    send: Child
    outcome: Outcome


def measure(folder: Path, n: int, articles: int) -> Run:
    """Seed a fresh database with n subscribers and send the week's issue to all of them."""
    db_path = folder / f"send-{n}.db"
    seeded = run_child(
        [sys.executable, str(Path(__file__).resolve()), "--seed", str(db_path),
         "--subscribers", str(n), "--articles", str(articles)],
        dict(os.environ), folder, folder / f"seed-{n}.err",
    )
    if seeded.returncode != 0:
        raise RuntimeError(f"seeding {n:,} failed:\n{(folder / f'seed-{n}.err').read_text()}")
    err = folder / f"send-{n}.err"
    sent = run_child(
        [sys.executable, "-m", "digest", "send", "--week", WEEK, "--quiet", "--ignore-check"],
        child_env(db_path), folder, err,
    )
    outcome = read_back(db_path)
    if sent.returncode != 0 or outcome.by_status != {"sent": n} or outcome.message_ids != n:
        raise RuntimeError(
            f"send to {n:,} incomplete: exit {sent.returncode}, deliveries "
            f"{outcome.by_status}, {outcome.message_ids} Message-IDs\n{err.read_text()}"
        )
    return Run(n, seeded.seconds, sent, outcome)


def baseline(folder: Path) -> int:
    """ru_maxrss (KiB) of a bare interpreter started the same way: the floor of the method."""
    child = run_child([sys.executable, "-c", "pass"], dict(os.environ), folder,
                      folder / "baseline.err")
    return child.maxrss_kib


# ------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,20000,80000",
                        help="comma-separated subscriber counts (default 5000,20000,80000)")
    parser.add_argument("--articles", type=int, default=6)
    parser.add_argument("--seed", metavar="DB", help=argparse.SUPPRESS)
    parser.add_argument("--subscribers", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed:
        seed(Path(args.seed), args.subscribers, args.articles)
        return

    sizes = sorted({int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()})
    if len(sizes) < 2 or sizes[0] < 1 or sizes[-1] > 1_000_000:
        parser.error("--sizes needs at least two counts between 1 and 1,000,000")

    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        floor = baseline(folder)
        for n in sizes:
            run = measure(folder, n, args.articles)
            runs.append(run)
            print(f"N={n:>9,}: peak RSS {run.send.maxrss_kib / 1024:7.1f} MiB, "
                  f"send {run.send.seconds:6.1f} s (seeding {run.seed_seconds:.1f} s)",
                  flush=True)
            (folder / f"send-{n}.db").unlink()  # keep the temporary folder small

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    small, big = runs[0], runs[-1]
    ratio = big.send.maxrss_kib / small.send.maxrss_kib
    per_sub = (big.send.maxrss_kib - small.send.maxrss_kib) * 1024 / (big.n - small.n)

    print()
    print(f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
          f"cpus {os.cpu_count()}, {args.articles} articles, console backend to /dev/null; "
          f"bare interpreter {floor / 1024:.1f} MiB, this process {own / 1024:.1f} MiB")
    print("| subscribers | peak RSS | whole run | messages/s (whole run) "
          "| deliveries, first to last | messages/s (deliveries) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        whole = run.send.seconds
        deliver = max(run.outcome.delivery_seconds, 1e-9)
        print(f"| {run.n:,} | {run.send.maxrss_kib / 1024:.1f} MiB | {whole:.1f} s "
              f"| {run.n / whole:,.0f} | {deliver:.1f} s | {run.n / deliver:,.0f} |")
    print()
    print(f"peak RSS at {big.n:,} / at {small.n:,}: {ratio:.3f}")
    print(f"marginal: {per_sub:+.1f} bytes per extra subscriber "
          f"({(big.send.maxrss_kib - small.send.maxrss_kib) / 1024:+.1f} MiB "
          f"for {big.n - small.n:,} more)")
    print("every run: exit 0, all N deliveries sent, N distinct Message-IDs")


if __name__ == "__main__":
    main()
