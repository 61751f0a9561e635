"""Load run: POST /subscribe against `digest serve` while `digest send` delivers an issue,
both processes on one SQLite file.

Seeds a SQLite file with a week of articles and N active subscribers (the bulk import path
of `digest subscribers import`), starts `python -m digest serve` (waitress) and several
client threads posting new addresses to /subscribe over keep-alive connections (half JSON,
half form posts), then starts `python -m digest send --week W --quiet --ignore-check` with the
console backend writing to /dev/null. The clients stop when the send exits (or at the
post or time bound); the server is stopped with SIGTERM so queued confirmation emails are
written (file backend) before the database is read back.

tests/test_load.py runs this and checks the outcome; run alone it prints the figures.

Example (from the repository root):
    .venv/bin/python bench/bench_load.py --subscribers 20000 --clients 4 --workers 8
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert

from digest import subscribers
from digest.config import Settings
from digest.db import Database
from digest.issues import parse_week
from digest.models import Article

REPO_ROOT = Path(__file__).resolve().parent.parent

WEEK = "2025-W47"
SECRET = "load-test-secret-key-0123456789"
SECTIONS = ("World", "Tech")
#: Addresses posted to /subscribe: distinct from the seeded readers.
POST_DOMAIN = "signup.example.org"
#: The answer for a successful sign-up, by kind of post.
EXPECTED = {"json": 202, "form": 303}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(db_url: str, base_url: str, **extra: str) -> dict[str, str]:
    """Environment for a `python -m digest` subprocess; no DIGEST_* variable leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update({
        "DIGEST_DATABASE_URL": db_url,
        "DIGEST_SECRET_KEY": SECRET,
        "DIGEST_BASE_URL": base_url,
        "DIGEST_POSTAL_ADDRESS": "1 Example Street, Springfield",
        "DIGEST_FROM_EMAIL": "weekly@news.example.org",
        "DIGEST_SECTIONS": ",".join(SECTIONS),
        "PYTHONPATH": str(REPO_ROOT),
    })
    env.update(extra)
    return env


def seed(db_url: str, readers: int, articles: int = 6, week: str = WEEK) -> None:
    """articles stories in week and readers active subscribers (r<i>@example.com).

    The subscribers go in through parse_csv + apply_import, the code behind
    `digest subscribers import`: one transaction of bulk upserts.
    """
    db = Database(db_url)
    try:
        window = parse_week(week, Settings().tz)
        with db.write() as session:
            session.execute(insert(Article), [
                {"url": f"https://news.example.org/story-{week}-{i}",
                 "title": f"Story {i} of {week}", "section": SECTIONS[i % len(SECTIONS)],
                 "published_at": window.start + timedelta(hours=i + 1),
                 "dek": f"What happened in story {i}.", "summary": f"Summary of story {i}."}
                for i in range(articles)
            ])
        csv_text = "email,name\n" + "".join(
            f"r{i}@example.com,Reader {i}\n" for i in range(readers)
        )
        parsed = subscribers.parse_csv(io.StringIO(csv_text), SECTIONS, source_name="load.csv")
        with db.write() as session:
            report = subscribers.apply_import(session, parsed, source="import load.csv")
        if report.added != readers:
            raise RuntimeError(f"seeding imported {report.summary()}, not {readers} new rows")
    finally:
        db.dispose()


@dataclass(frozen=True, slots=True)
class Post:
    """One POST /subscribe: what was sent, the answer, and when (wall clock, seconds)."""

    address: str
    kind: str  # "json" or "form"
    status: int  # 0: no HTTP answer (see error)
    started: float
    finished: float
    error: str = ""

    @property
    def ok(self) -> bool:
        """The normal success answer for its kind."""
        return self.status == EXPECTED[self.kind]


@dataclass
class LoadResult:
    """Everything a load run observed; read back from the processes and the database."""

    db_path: Path
    confirm_dir: Path
    posts: list[Post]
    send_started: float  # wall clock, just before the send process was started
    send_ended: float  # wall clock, when it was seen to exit
    send_returncode: int | None
    send_stderr: str
    serve_returncode: int | None
    serve_log: str
    deliveries: dict[str, int] = field(default_factory=dict)  # status -> rows
    message_ids: int = 0  # distinct Message-IDs among the issue's deliveries
    first_sent: float = 0.0  # wall clock of the first and last delivery marked sent
    last_sent: float = 0.0
    pending_posted: set[str] = field(default_factory=set)  # posted addresses now pending
    subscribers_by_status: dict[str, int] = field(default_factory=dict)
    confirmations: int = 0  # .eml files the server's mailer wrote

    @property
    def during_send(self) -> list[Post]:
        """Posts sent and answered while deliveries were being made."""
        return [p for p in self.posts
                if p.started >= self.first_sent and p.finished <= self.last_sent]

    @property
    def delivery_seconds(self) -> float:
        """From the first delivery marked sent to the last."""
        return max(self.last_sent - self.first_sent, 1e-9)

    @property
    def send_seconds(self) -> float:
        """The send process's whole run: start-up, check, freeze, deliveries."""
        return max(self.send_ended - self.send_started, 1e-9)

    def lines(self) -> list[str]:
        """The figures, for people."""
        during = self.during_send
        latencies = sorted(p.finished - p.started for p in during) or [0.0]
        p95 = latencies[max(0, int(len(latencies) * 0.95) - 1)]
        sent = self.deliveries.get("sent", 0)
        lines = [
            f"send: exit {self.send_returncode}, {sent:,} sent in {self.send_seconds:.1f} s "
            f"({sent / self.send_seconds:,.0f} msg/s whole run); deliveries "
            f"{self.delivery_seconds:.1f} s ({sent / self.delivery_seconds:,.0f} msg/s)",
            f"posts: {len(self.posts):,} in all, {sum(p.ok for p in self.posts):,} accepted; "
            f"{len(during):,} during the deliveries = {len(during) / self.delivery_seconds:,.1f} "
            f"posts/s, latency p50 {statistics.median(latencies) * 1000:.0f} ms, "
            f"p95 {p95 * 1000:.0f} ms",
            f"rows: {len(self.pending_posted):,} posted addresses pending; "
            f"{self.confirmations:,} confirmation emails written",
        ]
        before = [p for p in self.posts if p.finished <= self.send_started]
        seconds = self.send_started - before[0].started if before else 0.0
        if seconds >= 2.0:  # a baseline was asked for (--baseline)
            latencies = sorted(p.finished - p.started for p in before)
            p95 = latencies[max(0, int(len(latencies) * 0.95) - 1)]
            lines.insert(1, (
                f"posts before the send: {len(before):,} in {seconds:.1f} s = "
                f"{len(before) / seconds:,.1f} posts/s, latency p50 "
                f"{statistics.median(latencies) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms"
            ))
        return lines


def _wait_healthy(base_url: str, proc: subprocess.Popen[bytes], log: Path,
                  timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"digest serve exited early:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"digest serve did not answer /healthz within {timeout:.0f} s")


def _client(port: int, base_url: str, token: str, kind: str, addresses: list[str],
            stop: threading.Event, deadline: float, out: list[Post]) -> None:
    """Post each address once (kind: json or form) until stopped, on one keep-alive socket."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for address in addresses:
            if stop.is_set() or time.monotonic() > deadline:
                return
            if kind == "json":
                body = json.dumps({"email": address, "name": "Load Reader",
                                   "form_token": token})
                headers = {"Content-Type": "application/json", "Accept": "application/json"}
            else:
                body = urlencode({"email": address, "name": "Load Reader", "form_token": token})
                headers = {"Content-Type": "application/x-www-form-urlencoded",
                           "Origin": base_url}
            started = time.time()
            try:
                conn.request("POST", "/subscribe", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                out.append(Post(address, kind, response.status, started, time.time()))
            except (OSError, http.client.HTTPException) as exc:
                out.append(Post(address, kind, 0, started, time.time(),
                                f"{type(exc).__name__}: {exc}"))
                conn.close()  # reconnects on the next request
    finally:
        conn.close()


def _wait_for_log(log: Path, marker: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.read_text(errors="replace").count(marker) >= count:
            return
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def _wall(stored: str) -> float:
    # digest.models.UTCDateTime stores naive UTC text on SQLite.
    return datetime.fromisoformat(stored).replace(tzinfo=UTC).timestamp()


def read_back(result: LoadResult) -> None:
    """Fill in what the database and the confirmation folder say after the run."""
    conn = sqlite3.connect(result.db_path)
    try:
        result.deliveries = dict(conn.execute(
            "SELECT status, COUNT(*) FROM deliveries GROUP BY status"
        ).fetchall())
        result.message_ids = conn.execute(
            "SELECT COUNT(DISTINCT message_id) FROM deliveries"
        ).fetchone()[0]
        first, last = conn.execute(
            "SELECT MIN(sent_at), MAX(sent_at) FROM deliveries WHERE status = 'sent'"
        ).fetchone()
        result.pending_posted = {row[0] for row in conn.execute(
            "SELECT email_key FROM subscribers WHERE status = 'pending' AND email_key LIKE ?",
            (f"%@{POST_DOMAIN}",),
        )}
        result.subscribers_by_status = dict(conn.execute(
            "SELECT status, COUNT(*) FROM subscribers GROUP BY status"
        ).fetchall())
    finally:
        conn.close()
    if first and last:
        result.first_sent, result.last_sent = _wall(first), _wall(last)
    result.confirmations = sum(1 for _ in result.confirm_dir.glob("*.eml"))


def run_load(folder: Path, *, readers: int = 20_000, articles: int = 6, clients: int = 4,
             workers: int = 8, max_posts: int = 3000, max_seconds: float = 120.0,
             baseline_seconds: float = 0.0, week: str = WEEK) -> LoadResult:
    """Seed, serve, send and post at once; every process is stopped before this returns."""
    db_path = folder / "load.db"
    db_url = f"sqlite:///{db_path}"
    confirm_dir = folder / "confirmations"
    serve_log, send_err = folder / "serve.log", folder / "send.err"
    seed(db_url, readers, articles, week)

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    serve_env = base_env(
        db_url, base_url,
        DIGEST_BACKEND="file", DIGEST_FILE_DIR=str(confirm_dir),
        DIGEST_SUBSCRIBE_MIN_SECONDS="0",
        # Limits stay on (every post still counts them in the database) but never trigger.
        DIGEST_SUBSCRIBE_IP_LIMIT="1000000000", DIGEST_SUBSCRIBE_EMAIL_LIMIT="1000000000",
    )
    # The console backend writes every message to stdout: /dev/null here.
    send_env = base_env(db_url, base_url, DIGEST_BACKEND="console")

    per_client = max(1, max_posts // clients)
    outs: list[list[Post]] = [[] for _ in range(clients)]
    stop = threading.Event()
    threads: list[threading.Thread] = []
    serve: subprocess.Popen[bytes] | None = None
    send: subprocess.Popen[bytes] | None = None
    send_started = send_ended = 0.0
    started = time.monotonic()
    deadline = started + max_seconds
    try:
        with serve_log.open("wb") as log:
            serve = subprocess.Popen(
                [sys.executable, "-m", "digest", "serve", "--port", str(port),
                 "--workers", str(workers)],
                env=serve_env, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
            )
        _wait_healthy(base_url, serve, serve_log)
        with urllib.request.urlopen(f"{base_url}/subscribe/token", timeout=10) as response:
            token = json.load(response)["token"]
        for n in range(clients):
            addresses = [f"load{n}-{i}@{POST_DOMAIN}" for i in range(per_client)]
            thread = threading.Thread(
                target=_client, name=f"load-client-{n}",
                args=(port, base_url, token, ("json", "form")[n % 2], addresses, stop,
                      deadline, outs[n]),
            )
            threads.append(thread)
            thread.start()
        # Let the clients get going, so the send starts under load; with baseline_seconds,
        # measure the sign-ups alone for that long first.
        warm = time.monotonic() + 30
        while sum(len(o) for o in outs) < 5 * clients and time.monotonic() < warm:
            time.sleep(0.02)
        time.sleep(min(max(baseline_seconds, 0.0), 60.0))
        with send_err.open("wb") as err:
            send_started = time.time()
            send = subprocess.Popen(
                [sys.executable, "-m", "digest", "send", "--week", week, "--quiet",
                 "--ignore-check"],
                env=send_env, cwd=folder, stdout=subprocess.DEVNULL, stderr=err,
            )
        with contextlib.suppress(subprocess.TimeoutExpired):
            send.wait(timeout=max(1.0, deadline - time.monotonic()))
        send_ended = time.time()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        if send is not None:
            _stop(send, signal.SIGKILL)
        if serve is not None:
            # A worker writes its access-log line just after the answer went out.
            answered = sum(1 for o in outs for p in o if p.status)
            _wait_for_log(serve_log, '"path": "/subscribe"', answered, timeout=5.0)
            # SIGTERM: waitress stops and the mailer writes what is still queued.
            _stop(serve)
    result = LoadResult(
        db_path=db_path, confirm_dir=confirm_dir,
        posts=sorted((p for o in outs for p in o), key=lambda p: p.started),
        send_started=send_started, send_ended=send_ended,
        send_returncode=send.returncode if send is not None else None,
        send_stderr=send_err.read_text(errors="replace"),
        serve_returncode=serve.returncode if serve is not None else None,
        serve_log=serve_log.read_text(errors="replace"),
    )
    read_back(result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--max-posts", type=int, default=3000)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--baseline", type=float, default=0.0, metavar="SECONDS",
                        help="post alone for this long before starting the send (max 60)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_load(
            Path(tmp), readers=min(args.subscribers, 1_000_000), clients=args.clients,
            workers=args.workers, max_posts=min(args.max_posts, 100_000),
            max_seconds=min(args.max_seconds, 3600.0), baseline_seconds=args.baseline,
        )
        for line in result.lines():
            print(line)
        bad = [p for p in result.posts if not p.ok]
        if bad or result.send_returncode != 0 or "database is locked" in (
            result.send_stderr + result.serve_log
        ):
            print(f"PROBLEMS: {len(bad)} bad answers, e.g. {bad[:3]}; send exit "
                  f"{result.send_returncode}", file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
