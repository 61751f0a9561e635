"""Several sender processes for one issue on this machine (``digest send --workers N``).

The ``digest send`` process is worker 1 and starts N-1 more. Each extra worker is a fresh
process (multiprocessing *spawn*, so nothing is shared by fork): its own database engine
and connections, its own mail backend and connection pool, its own
:class:`~digest.sending.engine.Sender`. They coordinate only through the database, exactly
as senders on other machines do: ``FOR UPDATE SKIP LOCKED`` claims with leases, and the
shared rate bucket. The first process sends from the start (a spawned worker needs a
second or two to import digest), adds up everyone's progress and reports the combined
result.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import TYPE_CHECKING, Any

from digest.config import Settings
from digest.db import Database
from digest.errors import DigestError, InputError
from digest.models import utcnow
from digest.sending.control import IssueRef, summarise
from digest.sending.results import Progress, SendSummary
from digest.store import outbox

if TYPE_CHECKING:
    from digest.sending.engine import Sender

#: The most worker processes one ``digest send`` starts.
MAX_WORKERS = 64
# How long the parent waits for a worker to stop after Ctrl-C before killing it.
_STOP_TIMEOUT = 30.0


def check_workers(db: Database, workers: int) -> None:
    """Raise InputError unless this database can take ``workers`` sender processes."""
    if workers < 1 or workers > MAX_WORKERS:
        raise InputError(f"--workers must be between 1 and {MAX_WORKERS}, not {workers}")
    if workers > 1 and db.is_sqlite:
        raise InputError(
            "--workers needs PostgreSQL: SQLite lets one sender write at a time, so extra "
            "workers would only wait. Use --db postgresql+psycopg://user@host/dbname "
            "(pip install '.[postgres]' in the digest folder), or drop --workers"
        )


@dataclass
class _Worker:
    process: BaseProcess | None  # None: this process
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    retry: int = 0
    bounced: int = 0
    done: bool = False
    error: str | None = None
    stopped: str | None = None


@dataclass
class _Combined:
    base: outbox.Counts
    started: float
    workers: list[_Worker] = field(default_factory=list)

    def progress(self, issue: IssueRef) -> Progress:
        sent = sum(w.sent for w in self.workers)
        failed = sum(w.failed for w in self.workers)
        skipped = sum(w.skipped for w in self.workers)
        return Progress(
            number=issue.number, label=issue.label, sent=self.base.sent + sent,
            failed=self.base.failed + failed,
            pending=max(0, self.base.unfinished - sent - failed - skipped),
            total=self.base.total, sent_now=sent, elapsed=time.monotonic() - self.started,
            failed_now=failed, skipped_now=skipped,
        )


def run_workers(
    db: Database,
    settings: Settings,
    issue: IssueRef,
    workers: int,
    *,
    rate: float | None = None,
    worker_id: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    retry_wait: float,
    sender: Sender,
) -> SendSummary:
    """Send the issue with sender here and workers-1 more processes; combine the results.

    A worker that fails or dies does not stop the others; its claimed rows go out again
    (same Message-IDs) once the others see its pid gone, or after its lease. The summary
    lists every worker's failure in ``errors``, which makes the exit status 1.
    """
    check_workers(db, workers)
    context = multiprocessing.get_context("spawn")
    events: Queue[tuple[Any, ...]] = context.Queue()
    with db.read() as session:
        combined = _Combined(outbox.expected_counts(session, issue.id), time.monotonic())
    here = _Worker(None)
    combined.workers.append(here)
    for index in range(1, workers):
        tag = f"{worker_id}-{index + 1}" if worker_id else None
        process = context.Process(
            target=_worker_main, name=f"digest-send-{index + 1}",
            args=(settings, issue, index, rate, tag, retry_wait, events),
        )
        combined.workers.append(_Worker(process))
    lock = threading.Lock()

    def report() -> None:
        if on_progress is not None:
            with lock:  # called from this sender's database thread and the collector
                on_progress(combined.progress(issue))

    def own_progress(event: Progress) -> None:
        here.sent, here.failed, here.skipped = event.sent_now, event.failed_now, event.skipped_now
        report()

    sender.on_progress = own_progress
    collector = threading.Thread(target=_collect, args=(combined, events, report),
                                 name="digest-workers", daemon=True)
    try:
        for worker in combined.workers[1:]:
            assert worker.process is not None
            worker.process.start()
        collector.start()
        try:
            own = sender.run(issue)
            here.sent, here.failed, here.skipped = own.sent_now, own.failed_now, own.skipped_now
            here.retry, here.bounced, here.stopped = own.retry_now, own.bounced_now, own.stopped
        except DigestError as exc:
            here.error = str(exc)
        here.done = True
        collector.join()
    except BaseException:
        here.done = True
        _stop(combined.workers)
        raise
    finally:
        events.close()
    with db.write() as session:
        outbox.finish_issue(session, issue.id, now=utcnow())
    summary = summarise(db, issue)
    errors = tuple(
        f"worker {i + 1} (pid {w.process.pid if w.process else os.getpid()}): {w.error}"
        for i, w in enumerate(combined.workers) if w.error
    )
    stopped = next((w.stopped for w in combined.workers if w.stopped), None)
    return replace(
        summary,
        sent_now=sum(w.sent for w in combined.workers),
        failed_now=sum(w.failed for w in combined.workers),
        retry_now=sum(w.retry for w in combined.workers),
        bounced_now=sum(w.bounced for w in combined.workers),
        stopped=summary.stopped or stopped,
        elapsed=time.monotonic() - combined.started,
        errors=errors,
    )


def _collect(combined: _Combined, events: Queue[tuple[Any, ...]],
             report: Callable[[], None]) -> None:
    """Apply the workers' events until every worker has exited and reported."""
    workers = combined.workers
    while True:
        try:
            event = events.get(timeout=0.2)
        except queue.Empty:
            event = None
        if event is not None:
            kind, index, *values = event
            worker = workers[index]
            if kind == "progress":
                worker.sent, worker.failed, worker.skipped = values
            elif kind == "done":
                (worker.sent, worker.failed, worker.skipped, worker.retry, worker.bounced,
                 worker.stopped) = values
                worker.done = True
            elif kind == "error":
                worker.error = values[0]
                worker.done = True
            report()
            continue
        # The queue is drained: see who has exited without a last word.
        for worker in workers:
            if not worker.done and worker.process and worker.process.exitcode is not None:
                worker.done = True
                code = worker.process.exitcode
                why = f"signal {-code}" if code < 0 else f"status {code}"
                worker.error = (
                    f"exited with {why}; its claimed rows are sent again by the other "
                    "workers, or by the next digest send"
                )
        if all(w.done for w in workers):
            for worker in workers:
                if worker.process is not None:
                    worker.process.join(_STOP_TIMEOUT)
            return


def _stop(workers: list[_Worker]) -> None:
    """Ctrl-C or an error in the parent: let the workers record their batch, then reap them."""
    deadline = time.monotonic() + _STOP_TIMEOUT
    for worker in workers:
        process = worker.process
        if process is None or process.pid is None:
            continue
        process.join(max(0.0, deadline - time.monotonic()))
        if process.exitcode is None:
            process.kill()
            process.join(5)


def _worker_main(settings: Settings, issue: IssueRef, index: int, rate: float | None,
                 tag: str | None, retry_wait: float, events: Queue[tuple[Any, ...]]) -> None:
    """One worker process: its own database, backend and Sender, reporting through events."""
    from digest.mail import get_backend
    from digest.sending.engine import Sender

    def progress(event: Progress) -> None:
        events.put(("progress", index, event.sent_now, event.failed_now, event.skipped_now))

    db: Database | None = None
    try:
        db = Database(settings.database_url, migrate=False)
        backend = get_backend(settings)
        sender = Sender(db, settings, backend, rate=rate, worker_id=tag, on_progress=progress,
                        retry_wait=retry_wait)
        backend.open()
        try:
            summary = sender.run(issue)
        finally:
            backend.close()
        events.put(("done", index, summary.sent_now, summary.failed_now, summary.skipped_now,
                    summary.retry_now, summary.bounced_now, summary.stopped))
    except DigestError as exc:
        events.put(("error", index, str(exc)))
    except KeyboardInterrupt:
        events.put(("error", index, "interrupted"))
    finally:
        if db is not None:
            db.dispose()
        events.close()
        events.join_thread()

