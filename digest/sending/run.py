"""Entry points of a send: prepare and gate an issue, send it, dry-run it, or send one test copy."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from digest.checks import OVERRIDE_FLAG, CheckReport, check_issue
from digest.config import Settings
from digest.db import Database
from digest.errors import (
    CheckFailed,
    InputError,
    SendError,
)
from digest.issues import (
    IssueContent,
    Window,
    content_of,
    draft_words_error,
    select_issue,
    upcoming,
)
from digest.mail.base import BaseBackend, SendResult
from digest.message import DkimSigner, MessageTemplate, make_message_id
from digest.models import IssueStatus, SubscriberStatus, utcnow
from digest.personalise import Recipient
from digest.preview import archive_url, sample_reader
from digest.render import Renderer
from digest.sending.control import (
    IssueRef,
    complete_outbox,
    create_issue,
    find_issue,
    message_id_domain,
    ref_of,
    summarise,
)
from digest.sending.engine import DEFAULT_LOCK_WAIT, DEFAULT_RETRY_WAIT, ReaderKey, Sender
from digest.sending.pool import check_workers, run_workers
from digest.sending.results import Progress, SendSummary
from digest.store import issues as issue_store
from digest.store import outbox
from digest.store import subscribers as subscriber_store
from digest.tokens import preferences_url, require_secret_key, unsubscribe_url


def gate(report: CheckReport, *, ignore_check: bool = False) -> None:
    """The send gate: errors always stop a send, overridable errors unless the check is
    ignored (--ignore-check); warnings never do.

    Warnings (an image without alt text, an http:// link) are normal in real feeds, so they
    are the caller's to show, not a reason to skip the week.
    """
    if report.errors:
        raise CheckFailed(
            "the issue did not pass the check:\n  " + "\n  ".join(report.errors)
            + "\nfix these and run digest send again"
        )
    if report.overridable and not ignore_check:
        raise CheckFailed(
            "the check found what would hurt the sender's reputation:\n  "
            + "\n  ".join(report.overridable)
            + f"\nfix these, or re-run with {OVERRIDE_FLAG} to send anyway"
        )


def gate_verdict(report: CheckReport | None, *, ignore_check: bool = False) -> str:
    """One sentence saying whether a real send would pass the gate, for --dry-run."""
    if report is None:
        return "The issue exists already, so a real send does not check it again."
    if report.errors:
        return (f"The check found {len(report.errors)} error(s): a real send would refuse "
                "and send nothing.")
    if report.overridable and ignore_check:
        return (f"The check found {len(report.overridable)} error(s) that {OVERRIDE_FLAG} "
                f"overrides: a real send with {OVERRIDE_FLAG} would go out anyway.")
    if report.overridable:
        return (f"The check found {len(report.overridable)} error(s): a real send would "
                f"refuse and send nothing, unless given {OVERRIDE_FLAG}.")
    if report.warnings or report.advisories:
        count = len(report.warnings) + len(report.advisories)
        return (f"The check found {count} warning(s) and no error: a real send "
                "would go out and print the warnings.")
    return "The check passed: a real send would go out."


@dataclass(frozen=True, slots=True)
class IssueOptions:
    """Choices for a new issue (ignored when the issue exists already)."""

    include_sent: bool = False
    intro: str = ""
    subject: str = ""
    preheader: str = ""


def default_window(db: Database, settings: Settings, *, now: datetime | None = None) -> Window:
    """What ``digest send`` sends without --week/--since/--until.

    An unfinished (sending) issue first, so a rerun after a crash resumes it; then a draft,
    sent as the editor left it; otherwise the window from the end of the last sent issue to
    now (see issues.upcoming). A paused issue must be resumed or cancelled first, so that
    it is not silently overtaken by a new one.
    """
    with db.read() as session:
        unfinished = issue_store.unfinished_issues(session)
        if unfinished:
            issue = unfinished[0]
            if issue.status == IssueStatus.PAUSED:
                raise SendError(
                    f"issue {issue.number} ({issue.label}) is paused: run `digest issues resume "
                    f"{issue.label}` and digest send again, or cancel it"
                )
            return Window(issue.window_start, issue.window_end, issue.label)
        return upcoming(session, settings, now=now).window


@dataclass
class Prepared:
    """What ``digest send`` found before sending: the issue's content, and whether it exists."""

    window: Window
    content: IssueContent
    existing: IssueRef | None
    report: CheckReport | None = None  # the gate's findings, for a new issue
    subscribers: int = 0


def prepare(
    db: Database, settings: Settings, window: Window, *, content: IssueContent | None = None,
    options: IssueOptions | None = None, renderer: Renderer | None = None, check: bool = True,
) -> Prepared:
    """Read the window's issue (existing, or the one that would be frozen) and check it."""
    options = options or IssueOptions()
    with db.read() as session:
        existing = find_issue(session, window)
        if existing is not None and existing.status != IssueStatus.DRAFT:
            return Prepared(window, content_of(session, existing), ref_of(existing))
        if existing is not None:
            # A draft is sent as the editor left it; create_issue promotes it.
            if options.intro or options.subject or options.preheader:
                raise draft_words_error(existing)
            content = content_of(session, existing, settings)
        elif content is None:
            content = select_issue(
                session, settings, window, include_sent=options.include_sent,
                intro=options.intro, subject=options.subject, preheader=options.preheader,
            )
        subscribers = subscriber_store.count(session, SubscriberStatus.ACTIVE)
    report = None
    if check:
        renderer = renderer or Renderer(settings)
        report = check_issue(renderer.compile(content, None), content, settings)
    return Prepared(window, content, None, report, subscribers)


def send_issue(
    db: Database,
    settings: Settings,
    window: Window | None = None,
    *,
    content: IssueContent | None = None,
    options: IssueOptions | None = None,
    backend: BaseBackend | None = None,
    ignore_check: bool = False,
    check: bool = True,
    rate: float | None = None,
    worker_id: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_check: Callable[[CheckReport], None] | None = None,
    on_created: Callable[[int, str, int], None] | None = None,
    retry_wait: float = DEFAULT_RETRY_WAIT,
    lock_wait: float = DEFAULT_LOCK_WAIT,
    workers: int = 1,
    clock: Callable[[], datetime] = utcnow,
) -> SendSummary:
    """Create (or resume) the issue for window and deliver it; the library face of digest send.

    A new issue passes the check first (errors stop it unless ignore_check). The
    backend is opened before anything is written, so a wrong host or password fails with
    BackendConfigError and no row. Give window, or content (its window is used). With
    ``workers`` > 1 (PostgreSQL only) that many sender processes deliver it side by side.
    clock is the time every due, lease and retry moment is measured against (worker
    processes read the real clock).
    on_created(number, label, deliveries) is called once the issue is created, before the
    first batch goes out.
    """
    check_workers(db, workers)
    # A missing or weak signing key fails here, before the issue is frozen or a row claimed.
    require_secret_key(settings)
    if window is None:
        if content is None:
            raise InputError("send_issue needs a window or the issue content")
        window = Window(content.window_start, content.window_end, content.label)
    renderer = Renderer(settings)
    prepared = prepare(db, settings, window, content=content, options=options,
                       renderer=renderer, check=check)
    if prepared.report is not None:
        if on_check is not None:
            on_check(prepared.report)
        gate(prepared.report, ignore_check=ignore_check)
    if prepared.existing is not None and prepared.existing.status != IssueStatus.SENDING:
        return summarise(db, prepared.existing)
    if prepared.existing is None and prepared.subscribers == 0:
        # Creating the issue would mark its articles as gone out, to nobody.
        raise SendError(
            "there are no active subscribers, so nothing was sent and no issue was created; "
            "add some with `digest subscribers add` or `digest subscribers import`"
        )
    if backend is None:
        from digest.mail import get_backend

        backend = get_backend(settings)
    sender = Sender(db, settings, backend, rate=rate, worker_id=worker_id,
                    on_progress=on_progress, retry_wait=retry_wait, lock_wait=lock_wait,
                    renderer=renderer, clock=clock)
    # Building the main template first turns a bad from_email, list_id or DKIM key into an
    # error before any connection is opened or any row is written.
    sender.template(prepared.content, ())
    backend.open()
    try:
        created = False
        issue = prepared.existing
        if issue is None:
            issue, created = create_issue(db, settings, window, prepared.content, now=clock())
            if created and on_created is not None:
                with db.read() as session:
                    total = outbox.counts(session, issue.id).total
                on_created(issue.number, issue.label, total)
        # The rest of a large list is inserted while the first batches go out.
        rest = _Background(complete_outbox, db, settings, issue.id)
        try:
            if workers > 1:
                summary = run_workers(db, settings, issue, workers, rate=rate,
                                      worker_id=worker_id, on_progress=on_progress,
                                      retry_wait=retry_wait, sender=sender)
            else:
                summary = sender.run(issue)
        finally:
            rest.join()
    finally:
        backend.close()
    if created:
        summary = replace(summary, created=True)
    return summary





class _Background(threading.Thread):
    """Runs one call in a thread; join() re-raises its error in the caller."""

    def __init__(self, call: Callable[..., object], *args: Any) -> None:
        super().__init__(name="digest-outbox", daemon=True)
        self._call, self._args = call, args
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._call(*self._args)
        except BaseException as exc:  # handed to the thread that joins
            self._error = exc

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self._error is not None:
            raise self._error


@dataclass(frozen=True, slots=True)
class Variant:
    """One section variant in a dry run: who gets it and what it looks like."""

    sections: tuple[str, ...]  # empty: every section
    subscribers: int
    subject: str
    message_bytes: int
    empty: bool


@dataclass(frozen=True, slots=True)
class DryRun:
    """What digest send would do, computed without sending or writing anything."""

    number: int
    label: str
    window: Window
    existing: IssueRef | None
    subscribers: int
    variants: tuple[Variant, ...]
    report: CheckReport | None
    counts: outbox.Counts | None = None

    @property
    def lines(self) -> list[str]:
        """Human lines for the CLI."""
        out = []
        if self.existing is not None and self.counts is not None:
            c = self.counts
            out.append(
                f"Issue {self.number} ({self.label}) exists ({self.existing.status}): "
                f"{c.sent} sent, {c.failed} failed, {c.unfinished} pending; a send would "
                f"deliver the {c.unfinished} pending."
            )
        else:
            out.append(
                f"Dry run: issue {self.number} ({self.label}) would go to {self.subscribers} "
                f"subscriber(s) in {len(self.variants)} variant(s); nothing was sent or written."
            )
        for v in self.variants:
            who = ", ".join(v.sections) if v.sections else "all sections"
            if v.empty:
                out.append(f"  {v.subscribers:>7}  {who}: nothing to send (skipped)")
            else:
                out.append(f"  {v.subscribers:>7}  {who}: “{v.subject}”, "
                           f"{v.message_bytes / 1024:.1f} KB")
        return out


def dry_run(db: Database, settings: Settings, window: Window, *,
            content: IssueContent | None = None, options: IssueOptions | None = None) -> DryRun:
    """Render every section variant in use and count recipients; nothing is sent or written."""
    renderer = Renderer(settings)
    prepared = prepare(db, settings, window, content=content, options=options,
                       renderer=renderer)
    with db.read() as session:
        choices = outbox.section_choices(session)
        counts = outbox.counts(session, prepared.existing.id) if prepared.existing else None
    by_variant: dict[frozenset[str] | None, tuple[tuple[str, ...], int]] = {}
    for raw, count in choices:
        try:
            sections = [str(s) for s in json.loads(raw) or ()]
        except ValueError:
            sections = []
        key = renderer.variant_key(prepared.content, sections)
        names, before = by_variant.get(key, (tuple(sorted(sections)) if key else (), 0))
        by_variant[key] = (names, before + count)
    sample = sample_reader(settings, prepared.content.label)
    signer = DkimSigner.from_settings(settings)
    variants = []
    for key, (names, count) in sorted(by_variant.items(), key=lambda kv: -kv[1][1]):
        compiled = renderer.compile(prepared.content, key)
        size = 0
        if not compiled.is_empty:
            template = MessageTemplate(compiled.subject, compiled.html, compiled.text, settings,
                                       signer=signer, issue=prepared.content.label)
            size = len(template.build(sample, make_message_id(message_id_domain(settings))))
        variants.append(Variant(names, count, compiled.subject, size, compiled.is_empty))
    return DryRun(
        number=prepared.existing.number if prepared.existing else prepared.content.number,
        label=prepared.content.label,
        window=window,
        existing=prepared.existing,
        subscribers=sum(v.subscribers for v in variants),
        variants=tuple(variants),
        report=prepared.report,
        counts=counts,
    )


def send_test(
    db: Database, settings: Settings, window: Window, to: str, *,
    backend: BaseBackend | None = None, content: IssueContent | None = None,
    options: IssueOptions | None = None,
) -> SendResult:
    """Send one test copy to ``to`` (subject prefixed [TEST]) without recording a delivery.

    The copy is personalised as that subscriber if the address is on the list, else as a
    sample reader whose links lead nowhere.
    """
    require_secret_key(settings)
    prepared = prepare(db, settings, window, content=content, options=options, check=False)
    key = to.strip().lower()
    with db.read() as session:
        person = subscriber_store.get_by_key(session, key)
        ident = ReaderKey(person.id, person.email_key) if person else ReaderKey(0, key)
        name = person.name if person else "Sample Reader"
        sections = list(person.sections or ()) if person else []
    renderer = Renderer(settings)
    compiled = renderer.compile(prepared.content, sections)
    if compiled.is_empty:
        compiled = renderer.compile(prepared.content, None)
    template = MessageTemplate("[TEST] " + compiled.subject, compiled.html, compiled.text,
                               settings, issue=prepared.content.label)
    recipient = Recipient(
        email=to.strip(), name=name,
        unsubscribe_url=unsubscribe_url(settings, ident),
        preferences_url=preferences_url(settings, ident),
        view_url=archive_url(settings, prepared.content.label),
    )
    message = template.build_outgoing(recipient, make_message_id(message_id_domain(settings)))
    if backend is None:
        from digest.mail import get_backend

        backend = get_backend(settings)
    with backend:
        return backend.send_messages([message])[0]
