"""Benchmark: `digest subscribers import` of a large CSV, end to end (parse, validate, upsert).

Example (from the repository root):
    .venv/bin/python bench/bench_subscribers_import.py --rows 100000
    .venv/bin/python bench/bench_subscribers_import.py --rows 100000 \\
        --db postgresql+psycopg://postgres@127.0.0.1:5432/bench

The PostgreSQL database is emptied first (DROP SCHEMA public CASCADE): use a scratch one.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from digest import subscribers
from digest.db import Database

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_send import fresh_database

SECTIONS = ("Science", "Arts", "World", "Local")
# A realistic spread: a few big providers, a long tail of small domains.
BIG = ("gmail.example", "outlook.example", "yahoo.example", "icloud.example", "gmx.example")
FIRST = ("ada", "grace", "alan", "edsger", "barbara", "ken", "frances", "donald", "radia", "tim")


def write_csv(path: Path, rows: int, seed: int = 1) -> None:
    """rows distinct subscribers: ~3% invalid addresses, mixed case, 0–2 sections each."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["email", "name", "sections"])
        for i in range(rows):
            first = FIRST[i % len(FIRST)]
            domain = BIG[i % 5] if rng.random() < 0.6 else f"mail{rng.randrange(2000)}.example.org"
            local = f"{first}.{i}" if i % 7 else f"{first.title()}.{i}"
            address = f"{local}@{domain}" if rng.random() > 0.03 else f"{local}@@{domain}"
            chosen = rng.sample(SECTIONS, rng.randrange(3))
            writer.writerow([address, f"{first.title()} Reader {i}", ";".join(chosen)])


def run(url: str, path: Path, rows: int) -> None:
    db = Database(url)
    try:
        for label in ("first import (inserts)", "second import (updates)"):
            started = time.perf_counter()
            with path.open(encoding="utf-8-sig", newline="") as stream, db.write() as session:
                # What `digest subscribers import` runs: streamed, staged, one upsert.
                report = subscribers.import_csv(session, stream, SECTIONS,
                                                source_name=path.name, source="bench")
            total = time.perf_counter() - started
            print(f"{db.engine.dialect.name:10} {label:24} {rows:,} rows in {total:.2f} s "
                  f"= {rows / total:,.0f} rows/s -> {report.summary()}")
    finally:
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--db", default="sqlite", help="sqlite (a temp file) or a database URL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "subscribers.csv"
        write_csv(path, args.rows)
        print(f"CSV: {args.rows:,} rows, {path.stat().st_size / 1e6:.1f} MB")
        url = None if args.db.startswith("sqlite") else args.db
        run(fresh_database(url, folder, "bench"), path, args.rows)


if __name__ == "__main__":
    main()
