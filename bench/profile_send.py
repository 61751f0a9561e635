"""Profile `digest send` to smtp-sink with py-spy and print its top cost centres.

Seeds a SQLite file with N subscribers and a week of articles, then runs the real CLI
(`digest send --week … --ignore-check --quiet`) under `py-spy record` into Postfix's smtp-sink on
loopback, and summarises the samples: inclusive share of each function (where the time goes,
callees included) and self share by source line (what runs on the CPU).

py-spy is not a dependency of digest: `pip install py-spy` (it needs ptrace permission).

Run from the repository root:
    .venv/bin/python bench/profile_send.py --subscribers 20000
    .venv/bin/python bench/profile_send.py --subscribers 20000 --dkim rsa-sha256
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from send_setup import WEEK, seed_sqlite, send_env
from sink import smtp_sink

ROOT = Path(__file__).resolve().parent.parent


# Leaf frames that are a thread waiting, not working: py-spy's idle detection misses some
# (a thread blocked in a queue or a select looks busy to it), so they are dropped here.
WAITING = (
    "EpollSelector.select (selectors.py", "SocketIO.readinto (socket.py",
    "_worker (concurrent/futures/thread.py", "Condition.wait (threading.py",
    "Event.wait (threading.py", "Future.result (concurrent/futures/_base.py",
    "wait (concurrent/futures/_base.py", "Thread.join (threading.py",
    "Thread._wait_for_tstate_lock (threading.py",
)


def summarise(raw: Path, top: int) -> str:
    """Markdown tables of the hottest functions (inclusive) and source lines (self), over
    the samples where a thread was working (waits dropped, see WAITING)."""
    inclusive: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    total = waiting = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        if _short(frames[-1]).startswith(WAITING):
            waiting += count
            continue
        total += count
        seen = set()
        caller_is_ours = False
        for frame in frames:
            ours = "digest/" in frame and "/site-packages/" not in frame
            # digest's own functions, and the first library call each one makes: the
            # entry points (smtplib.sendmail, Session.execute, dumps) say where time goes.
            if ours or caller_is_ours:
                name = _function(frame)
                if name not in seen:
                    seen.add(name)
                    inclusive[name] += count
            caller_is_ours = ours
        self_time[_short(frames[-1])] += count
    rows = ["| function (inclusive) | share |", "|---|---:|"]
    for name, count in inclusive.most_common():
        share = count / total
        if share > 0.97:
            continue  # the CLI entry point: everything is under it
        rows.append(f"| `{name}` | {share:.1%} |")
        if len(rows) >= top + 2:
            break
    rows += ["", "| source line (self) | share |", "|---|---:|"]
    for name, count in self_time.most_common(top):
        rows.append(f"| `{name}` | {count / total:.1%} |")
    rows.append("")
    rows.append(f"{total:,} samples of work ({waiting:,} samples of waiting dropped)")
    return "\n".join(rows)


def _short(frame: str) -> str:
    """``func (path:line)`` with the path cut to its package-relative tail."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "lib/python3.11/", "lib/python3.12/", "lib/python3.13/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    else:
        if str(ROOT) in where:
            where = where.split(str(ROOT) + "/", 1)[1]
    return f"{name} ({where})"


def _function(frame: str) -> str:
    """The frame without its line number."""
    short = _short(frame)
    return short.rsplit(":", 1)[0] + ")" if ":" in short else short


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--articles", type=int, default=24)
    parser.add_argument("--dkim", choices=("rsa-sha256", "ed25519-sha256"))
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--keep", type=Path, help="also copy the raw py-spy samples here")
    parser.add_argument("--no-profile", action="store_true", help="time the send only")
    parser.add_argument("--gil", action="store_true",
                        help="sample only the thread holding the GIL (py-spy --gil)")
    parser.add_argument("--code", type=Path,
                        help="run the digest package of this checkout (git worktree) instead, "
                             "for before/after comparisons in one session")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        code_env = dict(os.environ)
        if args.code:
            # The other checkout seeds its own schema, and runs as `python -m digest`.
            code_env["PYTHONPATH"] = str(args.code.resolve())
            url = subprocess.run(
                [sys.executable, "-c", "import sys; from pathlib import Path; "
                 f"sys.path[1:1] = [{str(Path(__file__).parent)!r}]; "
                 "from send_setup import seed_sqlite; "
                 f"print(seed_sqlite(Path({tmp!r}), {args.subscribers}, {args.articles}))"],
                env=code_env, check=True, capture_output=True, text=True,
            ).stdout.strip()
            digest = [sys.executable, "-m", "digest"]
        else:
            url = seed_sqlite(folder, args.subscribers, args.articles)
            digest = [str(Path(sys.executable).parent / "digest")]
        digest += ["send", "--week", WEEK, "--ignore-check", "--quiet"]
        raw = folder / "profile.txt"
        with smtp_sink() as port:
            env = send_env(url, port, folder, dkim=args.dkim)
            if args.code:
                env["PYTHONPATH"] = code_env["PYTHONPATH"]
            command = digest if args.no_profile else [
                # --gil: only samples holding the GIL, i.e. CPU work, not threads waiting.
                py_spy, "record", *(["--gil"] if args.gil else []), "--format", "raw",
                "--rate", str(args.rate),
                "--output", str(raw), "--", *digest,
            ]
            started = time.perf_counter()
            before = os.times()
            done = subprocess.run(command, env=env, cwd=folder, capture_output=True,
                                  text=True, check=False)
            after = os.times()
            seconds = time.perf_counter() - started
        # py-spy exits 0 whatever the command did, so the summary line is the proof.
        if done.returncode != 0 or f"{args.subscribers} sent" not in done.stdout:
            sys.exit(f"digest send failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        cpu = (after.children_user - before.children_user
               + after.children_system - before.children_system)
        print(done.stdout.strip())
        print(f"\n{args.subscribers:,} messages in {seconds:.2f} s wall "
              f"({args.subscribers / seconds:,.0f}/s for the whole command), "
              f"{cpu:.2f} s CPU in digest send{'' if args.no_profile else ' and py-spy'}\n")
        if not args.no_profile:
            if args.keep:
                shutil.copy(raw, args.keep)
            print(summarise(raw, args.top))


if __name__ == "__main__":
    main()
