"""The send engine: a crash-safe outbox of delivery rows, claimed and sent in small batches.

The whole state of a send lives in the ``deliveries`` table, one row per subscriber, so no
checkpoint can run ahead of what was really sent (listmonk #3022, #2070). A batch of at most
``send_inflight`` rows is committed ``inflight`` (with the sender's name and a lease) before
its messages are handed to the backend, and the results are committed right after. If the
sender dies in between, only those in-flight rows are uncertain; once their lease runs out
(or the sender's pid is seen dead on this host) they are sent again, with the same
Message-ID, so duplicates are bounded by the in-flight window and recognisable.

Several senders may work on one issue. On PostgreSQL they claim side by side with
``FOR UPDATE SKIP LOCKED``. On SQLite one sender at a time holds the issue's lease and a
second one waits briefly, then exits with a message saying who holds it.

The package splits along its seams: ``engine`` (the claim/send/record loop), ``policy``
(retries and bounces), ``workers`` (sender identity and liveness), ``control`` (finding,
creating and steering issues), ``due`` (the ``--if-due`` decision), ``pool`` (``--workers``:
several sender processes), ``run`` (the entry points the CLI calls) and ``results``.
This module re-exports the public names.
"""

from digest.sending.control import (
    IssueDetails,
    IssueRef,
    cancel_issue,
    complete_outbox,
    create_issue,
    find_issue,
    issue_details,
    list_issues,
    lookup_issue,
    message_id_domain,
    pause_issue,
    resume_issue,
    retry_failed,
    retryable_by_issue,
    summarise,
    window_of,
)
from digest.sending.due import DueCheck, check_due
from digest.sending.engine import DEFAULT_LOCK_WAIT, DEFAULT_RETRY_WAIT, Sender
from digest.sending.policy import JITTER, is_bounce, retry_delay
from digest.sending.pool import MAX_WORKERS, check_workers, run_workers
from digest.sending.results import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_SOME_PENDING,
    Progress,
    Reason,
    SendSummary,
)
from digest.sending.run import (
    DryRun,
    IssueOptions,
    Prepared,
    Variant,
    default_window,
    dry_run,
    gate,
    gate_verdict,
    prepare,
    send_issue,
    send_test,
)
from digest.sending.workers import owner_is_dead, owner_pid, worker_name

__all__ = [
    "DEFAULT_LOCK_WAIT",
    "DEFAULT_RETRY_WAIT",
    "EXIT_OK",
    "EXIT_SOME_FAILED",
    "EXIT_SOME_PENDING",
    "JITTER",
    "MAX_WORKERS",
    "DryRun",
    "DueCheck",
    "IssueDetails",
    "IssueOptions",
    "IssueRef",
    "Prepared",
    "Progress",
    "Reason",
    "SendSummary",
    "Sender",
    "Variant",
    "cancel_issue",
    "check_due",
    "check_workers",
    "complete_outbox",
    "create_issue",
    "default_window",
    "dry_run",
    "find_issue",
    "gate",
    "gate_verdict",
    "is_bounce",
    "issue_details",
    "list_issues",
    "lookup_issue",
    "message_id_domain",
    "owner_is_dead",
    "owner_pid",
    "pause_issue",
    "prepare",
    "resume_issue",
    "retry_delay",
    "retry_failed",
    "retryable_by_issue",
    "run_workers",
    "send_issue",
    "send_test",
    "summarise",
    "window_of",
    "worker_name",
]
