"""Benchmark: POST /subscribe requests/s against a real `digest serve` on loopback.

Starts `python -m digest serve` in a subprocess (SQLite file in a temp folder unless --db is
given), then N client threads post the sign-up form over keep-alive connections. Every
request does the full work: origin check, two rate-limit upserts, time-trap check, address
validation, the subscriber upsert and the queued confirmation email (memory backend, so the
mail transport is not what is measured).

`--timing N` instead measures what one client can learn from the response time: N posts
for new addresses and N for already active ones, shuffled, one at a time over one
keep-alive connection. It prints both medians and how often the best single threshold
on the latency guesses right which kind an address is (50 % is a coin toss).

Example (from the repository root):
    .venv/bin/python bench/bench_subscribe.py --requests 4000 --clients 8 --workers 8
    .venv/bin/python bench/bench_subscribe.py --timing 2000
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(folder: Path, port: int, workers: int, db: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update({
        "DIGEST_DATABASE_URL": db or f"sqlite:///{folder / 'bench.db'}",
        "DIGEST_SECRET_KEY": "bench-secret-key-0123456789",
        "DIGEST_BASE_URL": f"http://127.0.0.1:{port}",
        "DIGEST_BACKEND": "memory",
        "DIGEST_SUBSCRIBE_MIN_SECONDS": "0",
        # Limits stay on (each request still counts in the database) but never trigger.
        "DIGEST_SUBSCRIBE_IP_LIMIT": "1000000000",
        "DIGEST_SUBSCRIBE_EMAIL_LIMIT": "1000000000",
        "PYTHONPATH": str(REPO_ROOT),
    })
    log = (folder / "serve.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "digest", "serve", "--port", str(port), "--workers", str(workers)],
        env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
    )


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("digest serve exited; see serve.log")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("digest serve did not answer /healthz in time")


def client(port: int, token: str, jobs: list[str], latencies: list[float]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    try:
        for address in jobs:
            body = urlencode({"email": address, "name": "Bench Reader", "form_token": token})
            started = time.perf_counter()
            conn.request("POST", "/subscribe", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            latencies.append(time.perf_counter() - started)
            if response.status != 303:
                raise SystemExit(f"unexpected status {response.status}")
    finally:
        conn.close()


def scenario(port: int, name: str, addresses: list[str], clients: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/subscribe/token", timeout=5) as r:
        token = json.load(r)["token"]
    shares = [addresses[i::clients] for i in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    threads = [threading.Thread(target=client, args=(port, token, share, lat))
               for share, lat in zip(shares, latencies, strict=True)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    elapsed = time.perf_counter() - started
    every = sorted(x for lat in latencies for x in lat)
    p95 = every[int(len(every) * 0.95) - 1]
    print(f"{name:34} {len(every):6,} requests in {elapsed:6.2f} s = {len(every) / elapsed:7,.0f} "
          f"req/s; latency p50 {statistics.median(every) * 1000:6.1f} ms, "
          f"p95 {p95 * 1000:6.1f} ms")


def seed_active(db_url: str, addresses: list[str]) -> None:
    """Insert addresses as active (confirmed) subscribers, straight into the database."""
    sys.path.insert(0, str(REPO_ROOT))
    from sqlalchemy import insert

    from digest.db import Database
    from digest.models import Subscriber

    db = Database(db_url)
    with db.write() as session:
        session.execute(insert(Subscriber), [
            {"email": a, "email_key": a, "name": "", "status": "active", "sections": []}
            for a in addresses
        ])
    db.dispose()


def best_guess_rate(new: list[float], known: list[float]) -> float:
    """Balanced accuracy of the best threshold rule "slower than t means new" (or faster)."""
    labelled = sorted([(t, 1) for t in new] + [(t, 0) for t in known])
    best, below_new, below_known = 0.5, 0, 0
    for _, is_new in labelled:
        below_new += is_new
        below_known += 1 - is_new
        rate = (below_known / len(known) + (len(new) - below_new) / len(new)) / 2
        best = max(best, rate, 1 - rate)
    return best


def timing(port: int, db_url: str, n: int) -> None:
    """One client, shuffled new and active addresses: can the latency tell them apart?"""
    active = [f"member{i}@example.org" for i in range(n)]
    seed_active(db_url, active)
    jobs = [(a, False) for a in active] + [(f"fresh{i}@example.org", True) for i in range(n)]
    random.Random(10).shuffle(jobs)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/subscribe/token", timeout=5) as r:
        token = json.load(r)["token"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    seen: dict[bool, list[float]] = {True: [], False: []}
    try:
        for i, (address, is_new) in enumerate(jobs):
            body = urlencode({"email": address, "name": "Bench Reader", "form_token": token})
            started = time.perf_counter()
            conn.request("POST", "/subscribe", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            elapsed = time.perf_counter() - started
            if response.status != 303:
                raise SystemExit(f"unexpected status {response.status}")
            if i >= 50:  # the first requests warm caches for both kinds alike
                seen[is_new].append(elapsed)
            time.sleep(0.02)  # one probe at a time: the work after a response is done
    finally:
        conn.close()
    new_ms = statistics.median(seen[True]) * 1000
    known_ms = statistics.median(seen[False]) * 1000
    print(f"new addresses     {len(seen[True]):6,} posts, median {new_ms:6.2f} ms")
    print(f"active addresses  {len(seen[False]):6,} posts, median {known_ms:6.2f} ms")
    print(f"ratio new/active  {new_ms / known_ms:6.2f}; best threshold guesses right "
          f"{best_guess_rate(seen[True], seen[False]) * 100:4.1f} % of the time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--db", default="", help="database URL (default: a temp SQLite file)")
    parser.add_argument("--timing", type=int, default=0, metavar="N",
                        help="measure new against active addresses, N of each, one client")
    args = parser.parse_args()
    n = min(args.requests, 100_000)
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = start_server(Path(tmp), port, args.workers, args.db)
        try:
            wait_healthy(port, proc)
            if args.timing:
                timing(port, args.db or f"sqlite:///{Path(tmp) / 'bench.db'}",
                       min(args.timing, 50_000))
                return
            scenario(port, "new addresses (row + email)", [f"new{i}@example.org"
                                                          for i in range(n)], args.clients)
            scenario(port, "known addresses (24 h cap, no-op)", [f"new{i % 50}@example.org"
                                                                for i in range(n)], args.clients)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


if __name__ == "__main__":
    main()
