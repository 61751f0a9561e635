"""Run every benchmark and write the figures into BENCHMARKS.md.

    python bench/run.py            # the full set: tens of minutes (1,000,000 subscribers: more)
    python bench/run.py --quick    # seconds-to-a-minute smoke run; .ci/run runs it

Figures, in the issue's numbering (each a median of several runs, with the ratio to the
baseline measured in the same run, and the command that reproduces it):

1. end-to-end `digest send` into smtp-sink on SQLite (bench_smtp) and PostgreSQL
   (bench_send_pg), beside a bare pipelined client and the naive script
2. import + prepare + send of 100,000 (and with --million 1,000,000) subscribers on
   PostgreSQL with --workers 1, 2 and 4, with peak RSS of every process (bench_scale);
   plus claims with 1,000,000 old delivery rows (bench_claims)
3. messages/s on one core: unsigned, RSA, Ed25519 and dkimpy (bench_smtp)
4. POST /subscribe requests/s and p99 latency during a 100,000-recipient send (bench_load)

PostgreSQL figures use --pg-url, else DIGEST_BENCH_POSTGRES_URL, else
DIGEST_TEST_POSTGRES_URL; that database is wiped. Without one they are skipped. The full run
replaces the block between the ``bench/run.py`` markers in BENCHMARKS.md; --quick prints
only, unless --write is given.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_claims
import bench_load
import bench_scale
import bench_send_pg
import bench_smtp

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- bench/run.py: begin (generated; rerun python bench/run.py to refresh) -->"
END = "<!-- bench/run.py: end -->"


def machine() -> str:
    """One line about where the figures come from."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}, load average at the end "
            f"{os.getloadavg()[0]:.1f}")


def subscribe_during_send(readers: int, max_seconds: float) -> list[str]:
    """Benchmark 4: posts/s and p99 latency while a readers-recipient send runs."""
    with tempfile.TemporaryDirectory() as tmp:
        result = bench_load.run_load(Path(tmp), readers=readers, max_seconds=max_seconds,
                                     max_posts=100_000)
    during = result.during_send
    latencies = sorted(p.finished - p.started for p in during) or [0.0]
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    errors = sum(not p.ok for p in result.posts)
    return [
        f"command: `python bench/bench_load.py --subscribers {readers}` (SQLite, `digest serve` "
        "under waitress with 8 threads, 4 posting clients, the send to the console backend)",
        "",
        "| figure | value |", "|---|---:|",
        f"| recipients sent | {result.deliveries.get('sent', 0):,} |",
        f"| posts during the send | {len(during):,} |",
        f"| posts/s during the send | {len(during) / result.delivery_seconds:,.1f} |",
        f"| p50 latency | {statistics.median(latencies) * 1000:.0f} ms |",
        f"| p99 latency | {p99 * 1000:.0f} ms |",
        f"| answers that were not the normal success | {errors} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run for CI")
    parser.add_argument("--write", action="store_true", help="with --quick: write anyway")
    parser.add_argument("--million", action="store_true",
                        help="also 1,000,000 subscribers in benchmark 2 (long)")
    parser.add_argument("--pg-url", default=os.environ.get(
        "DIGEST_BENCH_POSTGRES_URL", os.environ.get("DIGEST_TEST_POSTGRES_URL", "")))
    args = parser.parse_args()
    quick = args.quick
    started = time.monotonic()
    out: list[str] = [BEGIN, "", f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
                      f"{' (--quick)' if quick else ''}."]

    print("== benchmarks 1 (SQLite) and 3: bench_smtp", flush=True)
    results = bench_smtp.run(quick)
    if args.pg_url:
        print("== benchmark 1 (PostgreSQL): bench_send_pg", flush=True)
        results += bench_send_pg.run(args.pg_url, 1000 if quick else 20_000, 1 if quick else 3)
    out += ["", "### Benchmarks 1 and 3: sending and signing", "", bench_smtp.table(results)]
    out += ["", "Commands: " + "; ".join(sorted({f"`{r.command}`" for r in results}))]

    if args.pg_url:
        print("== benchmark 2: bench_scale, bench_claims", flush=True)
        sizes = [2000] if quick else [100_000] + ([1_000_000] if args.million else [])
        scale = bench_scale.run(args.pg_url, sizes, [1, 2] if quick else [1, 2, 4])
        out += ["", "### Benchmark 2: import, prepare and send on PostgreSQL", "",
                f"command: `python bench/bench_scale.py --subscribers {' '.join(map(str, sizes))}"
                f" --workers {' '.join(str(r.workers) for r in scale[:3])}`", "",
                bench_scale.table(scale)]
        with tempfile.TemporaryDirectory() as tmp:
            claims = bench_claims.run(args.pg_url, old=20_000 if quick else 1_000_000,
                                      claims=30 if quick else 300, batch=100,
                                      repeats=1 if quick else 3, folder=Path(tmp))
        out += ["", "Claims with old delivery rows in the table (batches of 100):", "",
                "| table | claim+record cycles/s | claim queries, ms |", "|---|---:|---:|"]
        out += [f"| {name} | {rate:,.1f} | {ms:.2f} |" for name, rate, ms in claims]
    else:
        out += ["", "Benchmark 2 skipped: no PostgreSQL URL (--pg-url)."]

    print("== benchmark 4: bench_load", flush=True)
    out += ["", "### Benchmark 4: POST /subscribe during a send", ""]
    out += subscribe_during_send(2000 if quick else 100_000, 60 if quick else 900)
    out += ["", f"Machine: {machine()}. Whole run {time.monotonic() - started:.0f} s.", "", END]
    text = "\n".join(out)
    print(text)
    if not quick or args.write:
        path = ROOT / "BENCHMARKS.md"
        current = path.read_text()
        if BEGIN in current and END in current:
            head, rest = current.split(BEGIN, 1)
            current = head + text + rest.split(END, 1)[1]
        else:
            current = current.rstrip() + "\n\n## Results of bench/run.py\n\n" + text + "\n"
        path.write_text(current)


if __name__ == "__main__":
    main()
