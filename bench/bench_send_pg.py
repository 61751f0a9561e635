"""Benchmark 1 on PostgreSQL: `digest send` end to end into smtp-sink, beside the bare client.

Each run, interleaved so load from other jobs hits both alike: the bare pipelined client
(bench_smtp.bare_client) writes N pre-built messages, then `digest send --quiet` sends a
freshly seeded N-subscriber PostgreSQL list with all its bookkeeping (check, freeze, outbox
rows, claims, results), the whole command timed, start-up included.

Run from the repository root (the database is wiped!):
    .venv/bin/python bench/bench_send_pg.py --db-url postgresql+psycopg://postgres@127.0.0.1/bench
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_send import fresh_database, seed, settings_for
from bench_smtp import Result, bare_client, prebuilt
from send_setup import WEEK, send_env
from sink import smtp_sink

from digest.db import Database
from digest.issues import parse_week

DIGEST = str(Path(sys.executable).parent / "digest")


def digest_send_pg(url: str, folder: Path, port: int, count: int, connections: int,
                   workers: int = 1) -> float:
    """Seconds for `digest send` of a fresh count-subscriber PostgreSQL list."""
    fresh_database(url, folder, "pg")
    db = Database(url)
    seed(db, parse_week(WEEK, settings_for(url).tz), count, 24)
    db.dispose()
    env = send_env(url, port, folder, smtp_connections=str(connections))
    command = [DIGEST, "send", "--week", WEEK, "--ignore-check", "--quiet",
               "--workers", str(workers)]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=folder, capture_output=True, text=True,
                          check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0 or f"{count} sent" not in done.stdout:
        raise RuntimeError(f"digest send failed: {done.stdout}\n{done.stderr}")
    return seconds


def run(url: str, count: int, repeats: int, connections: int = 8,
        workers: tuple[int, ...] = (1, 2)) -> list[Result]:
    """Bare client and `digest send --workers W` on PostgreSQL, medians and ratios."""
    messages = prebuilt(count)
    bare: list[float] = []
    sends: dict[int, list[float]] = {w: [] for w in workers}
    with tempfile.TemporaryDirectory() as tmp, smtp_sink() as port:
        for _ in range(repeats):
            started = time.perf_counter()
            bare_client(messages, port, connections)
            bare.append(count / (time.perf_counter() - started))
            for w in workers:
                sends[w].append(count / digest_send_pg(url, Path(tmp), port, count,
                                                       connections, w))
    command = f"python bench/bench_send_pg.py --subscribers {count} --repeats {repeats}"
    base = Result("1", f"bare pipelined client, pre-built messages (PostgreSQL run, {count:,})",
                  statistics.median(bare), "msg/s", command, bare)
    out = [base]
    for w, runs in sends.items():
        result = Result("1", f"`digest send --workers {w}` end to end, PostgreSQL, {count:,} "
                        "subscribers", statistics.median(runs), "msg/s", command, runs,
                        baseline=base.name, note="whole command incl. start-up and prepare")
        result.ratio = result.value / base.value
        out.append(result)
    return out


def main() -> None:
    from bench_smtp import table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", required=True, help="PostgreSQL URL (wiped!)")
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    print(table(run(args.db_url, args.subscribers, args.repeats, args.connections)))


if __name__ == "__main__":
    main()
