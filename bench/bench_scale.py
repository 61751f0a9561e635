"""Scale on PostgreSQL: import, prepare and send N subscribers with --workers W, as a user would.

For each (N, W): an emptied PostgreSQL database, a CSV of N subscribers (~3 % invalid
addresses, like a real export), then the two commands a user runs, each timed and with the
peak RSS (VmHWM) of every process it starts, workers included:

    digest subscribers import list.csv
    digest send --week 2025-W47 --ignore-check --quiet --workers W      (into smtp-sink)

`digest send` prepares the issue (check, freeze, one delivery row per subscriber) and sends
it; the first rows are made with the issue and the rest while sending, so "first message"
(the first delivery's sent_at, from the command's start) shows how soon mail flows.

Run from the repository root (the database is wiped!):
    .venv/bin/python bench/bench_scale.py --db-url postgresql+psycopg://postgres@127.0.0.1/bench \\
        --subscribers 100000 --workers 1 2 4
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_send import fresh_database, seed, settings_for
from bench_subscribers_import import write_csv
from send_setup import WEEK, send_env
from sink import smtp_sink
from sqlalchemy import func, select

from digest.db import Database
from digest.issues import parse_week
from digest.models import Delivery, Issue, Subscriber

DIGEST = str(Path(sys.executable).parent / "digest")


@dataclass
class Peaks:
    """Peak RSS in MiB per process (pid → (name, MiB)) of a process tree."""

    by_pid: dict[int, tuple[str, float]] = field(default_factory=dict)

    def lines(self) -> str:
        return ", ".join(f"{name} {mib:.0f}" for name, mib in sorted(self.by_pid.values()))

    @property
    def worst(self) -> float:
        return max((mib for _, mib in self.by_pid.values()), default=0.0)


def _tree(root: int) -> list[int]:
    """root and its descendants, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += frontier
    return found


def _sample(root: int, peaks: Peaks, stop: threading.Event) -> None:
    while not stop.is_set():
        for pid in _tree(root):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            hwm = next((line for line in status.splitlines() if line.startswith("VmHWM")), "")
            if not hwm:
                continue
            mib = int(hwm.split()[1]) / 1024
            words = [c.decode(errors="replace") for c in cmd if c]
            name = ("worker" if any("multiprocessing" in w for w in words)
                    else Path(words[1]).name if len(words) > 1 else "?")
            if "resource_tracker" in " ".join(words):
                name = "resource-tracker"
            old = peaks.by_pid.get(pid, (name, 0.0))
            peaks.by_pid[pid] = (old[0] if old[0] != "?" else name, max(old[1], mib))
        stop.wait(0.2)


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, Peaks, str]:
    """Run command; (wall seconds, peak RSS of its processes, output). Raises if it fails."""
    peaks = Peaks()
    stop = threading.Event()
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    sampler = threading.Thread(target=_sample, args=(proc.pid, peaks, stop), daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    text = out.decode(errors="replace")
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"{' '.join(command[1:3])} exited {proc.returncode}: {text[-2000:]}")
    return seconds, peaks, text


@dataclass
class ScaleResult:
    subscribers: int
    workers: int
    imported: int
    import_seconds: float
    import_peaks: Peaks
    send_seconds: float
    send_peaks: Peaks
    sent: int
    first_message: float  # seconds from the send command's start

    @property
    def total(self) -> float:
        return self.import_seconds + self.send_seconds


def run_one(url: str, subscribers: int, workers: int, folder: Path, port: int,
            connections: int) -> ScaleResult:
    """Import and send subscribers with workers processes on an emptied database."""
    fresh_database(url, folder, "scale")
    db = Database(url)
    settings = settings_for(url)
    seed(db, parse_week(WEEK, settings.tz), 0, 6)
    csv_path = folder / f"list-{subscribers}.csv"
    if not csv_path.exists():
        write_csv(csv_path, subscribers)
    env = send_env(url, port, folder, smtp_connections=str(connections))
    import_seconds, import_peaks, _ = timed([DIGEST, "subscribers", "import", str(csv_path)],
                                            env, folder)
    with db.read() as session:
        imported = int(session.scalar(select(func.count()).select_from(Subscriber)) or 0)
    wall_start = datetime.now().astimezone()
    send_seconds, send_peaks, output = timed(
        [DIGEST, "send", "--week", WEEK, "--ignore-check", "--quiet", "--workers", str(workers)],
        env, folder,
    )
    with db.read() as session:
        sent = int(session.scalar(select(func.count()).where(Delivery.status == "sent")) or 0)
        first = session.scalar(select(func.min(Delivery.sent_at)))
        assert session.scalar(select(Issue.status)) == "sent", output
    db.dispose()
    first_message = (first - wall_start).total_seconds() if first is not None else float("nan")
    return ScaleResult(subscribers, workers, imported, import_seconds, import_peaks,
                       send_seconds, send_peaks, sent, first_message)


def table(results: list[ScaleResult]) -> str:
    """The results as a Markdown table."""
    rows = ["| subscribers | workers | import s | send s (incl. prepare) | total s | send msg/s "
            "| first message after s | peak RSS MiB, import | peak RSS MiB per process, send |",
            "|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in results:
        rows.append(
            f"| {r.subscribers:,} | {r.workers} | {r.import_seconds:.1f} | {r.send_seconds:.1f} "
            f"| {r.total:.1f} | {r.sent / r.send_seconds:,.0f} | {r.first_message:.1f} | "
            f"{r.import_peaks.lines()} | {r.send_peaks.lines()} |"
        )
    return "\n".join(rows)


def run(url: str, sizes: list[int], workers: list[int], connections: int = 4) -> list[ScaleResult]:
    """Every (size, workers) combination, smallest first, into one smtp-sink."""
    out = []
    with tempfile.TemporaryDirectory() as tmp, smtp_sink() as port:
        for size in sizes:
            for count in workers:
                result = run_one(url, size, count, Path(tmp), port, connections)
                print(table([result]).splitlines()[-1], flush=True)
                out.append(result)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", required=True, help="PostgreSQL URL (wiped!)")
    parser.add_argument("--subscribers", type=int, nargs="+", default=[100_000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--connections", type=int, default=4, help="smtp_connections")
    args = parser.parse_args()
    results = run(args.db_url, args.subscribers, args.workers, args.connections)
    print(table(results))


if __name__ == "__main__":
    main()
