"""Subscribers: address normalisation, add/import/export, confirm/unsubscribe, erasure.

Nothing here knows about click or Flask; the CLI and the web app call these functions inside
a database session they own.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, TextIO

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES
from email_validator.syntax import validate_email_local_part
from sqlalchemy.orm import Session

from digest.csvrows import read_rows
from digest.errors import InputError, NotFoundError
from digest.local_time import clean_zone
from digest.models import Subscriber, SubscriberStatus, Suppression, utcnow
from digest.store import bounces as bounce_store
from digest.store import imports
from digest.store import subscribers as store
from digest.tokens import TokenData

Status = SubscriberStatus

#: The longest name stored (the column holds 200); the web form allows less.
NAME_MAX = 200
#: At most one confirmation email per address in this interval.
CONFIRMATION_INTERVAL = timedelta(hours=24)

# The suppression list must survive secret-key rotation, so its salt is a fixed app constant:
# the point is that the table alone does not list addresses in clear text.
_SUPPRESSION_HASH = hashlib.sha256(b"digest-suppression-v1\0")

# C0/C1 controls, zero-width space, bidi marks and overrides, line/paragraph separators, BOM.
# ZWJ/ZWNJ (U+200C/U+200D) stay: some scripts and emoji need them.
_UNSAFE_CHARS = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b\u200e\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069\ufeff]"
)
_SECTION_SPLIT = re.compile(r"[;,]")
# Spreadsheet apps run cells that start with these as formulas (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

_IMPORT_STATUSES = {s.value for s in Status}
_IMPORT_BATCH = 5000
#: How many invalid rows an import lists by line number.
MAX_REPORTED_ERRORS = 10


@dataclass(frozen=True, slots=True)
class Address:
    """A validated address: display form, lower-cased key, and ASCII form for SMTP if any."""

    email: str
    key: str
    ascii: str | None

    @property
    def hash(self) -> str:
        """The suppression-list hash of this address."""
        return email_hash(self.key)


#: RFC 5321 §4.5.3.1.1: at most 64 octets before the @.
LOCAL_PART_MAX = 64


def normalise(address: str, *, lookup: bool = False) -> Address:
    """Validate and normalise an address; InputError says why it is not valid.

    By default this is the rule for a *new* address, at every door (form, webhook, CLI add,
    import, --to): besides email-validator's syntax it refuses a local part over 64 octets
    and one with non-ASCII characters, which would need SMTPUTF8 (RFC 6531) from every
    server on the way and then fail for good at each send. ``lookup=True`` only checks the
    syntax, to find, remove, erase or suppress an address stored before this rule.
    """
    text = address.strip()
    try:
        fast = _normalise_simple(text)
        if fast is None:
            valid = validate_email(text, check_deliverability=False)
            fast = Address(email=valid.normalized, key=valid.normalized.lower(),
                           ascii=valid.ascii_email)
    except EmailNotValidError as exc:
        raise InputError(f"{text!r} is not a valid email address: {exc}") from None
    if not lookup:
        _check_local_part(text, fast.email.rpartition("@")[0])
    return fast


def _check_local_part(text: str, local: str) -> None:
    """Refuse what validates but cannot be delivered by digest (see normalise)."""
    if not local.isascii():
        odd = "".join(dict.fromkeys(c for c in local if not c.isascii()))
        raise InputError(
            f"{text!r} has non-ASCII characters before the @ ({odd}); digest cannot send to "
            "such addresses (they need SMTPUTF8 on every server on the way): use an address "
            "with only ASCII letters, digits and punctuation before the @"
        )
    if len(local.encode()) > LOCAL_PART_MAX:
        raise InputError(
            f"{text!r} has {len(local.encode())} characters before the @; RFC 5321 allows "
            f"at most {LOCAL_PART_MAX}, so mail servers refuse it"
        )


# Plain ASCII dot-atom@hostname addresses, short enough that no length limit can apply.
_SIMPLE_ADDRESS = re.compile(r"([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64})@([A-Za-z0-9.-]{1,120})")


@lru_cache(maxsize=4096)
def _domain(domain: str) -> tuple[str, str]:
    # Validating the domain is ~90% of email-validator's cost, and lists repeat domains.
    valid = validate_email("a@" + domain, check_deliverability=False)
    return valid.domain, valid.ascii_domain


def _normalise_simple(text: str) -> Address | None:
    """email-validator's result for the common plain-ASCII shape, with the domain check cached.

    Returns None for anything else (Unicode, quotes, IDNA "xn--" labels, role names that
    email-validator lower-cases), which then goes through the full validate_email.
    tests/test_subscribers.py checks this gives the same answers as validate_email.
    """
    match = _SIMPLE_ADDRESS.fullmatch(text)
    if match is None:
        return None
    local, domain = match.groups()
    if "xn--" in domain.lower() or local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:
        return None
    local = validate_email_local_part(local)["local_part"] or local
    norm_domain, ascii_domain = _domain(domain)
    email = local + "@" + norm_domain
    return Address(email=email, key=email.lower(), ascii=local + "@" + ascii_domain)


def envelope_address(email: str) -> str:
    """The address to put in SMTP commands and headers: IDNA domain when the local part is ASCII."""
    address = normalise(email, lookup=True)
    return address.ascii or address.email


def email_hash(email_key: str) -> str:
    """SHA-256 (with a fixed app salt) of a lower-cased normalised address, as hex."""
    digest = _SUPPRESSION_HASH.copy()
    digest.update(email_key.encode("utf-8"))
    return digest.hexdigest()


def clean_name(value: str, max_length: int = NAME_MAX) -> str:
    """Drop control and bidi characters, collapse whitespace, cut to max_length."""
    return " ".join(_UNSAFE_CHARS.sub(" ", value).split())[:max_length].strip()


#: Most section names one subscriber may choose.
MAX_SECTIONS = 100


def resolve_sections(values: Iterable[str], known: Sequence[str]) -> list[str]:
    """Map section names to their configured spelling; InputError for unknown ones.

    With no sections configured any name is accepted. An empty list means "every section".
    A choice longer than MAX_SECTIONS is refused: no reader picks that many, and a public
    form must not let one request make the server work through thousands.
    """
    values = list(values)
    if len(values) > MAX_SECTIONS:
        raise InputError(f"too many sections ({len(values)}); choose at most {MAX_SECTIONS}")
    lookup = {name.lower(): name for name in known}
    out: list[str] = []
    seen: set[str] = set()  # a list lookup made a long free-form list quadratic
    for raw in values:
        name = clean_name(raw, 200)
        if not name:
            continue
        if lookup:
            canonical = lookup.get(name.lower())
            if canonical is None:
                raise InputError(
                    f"unknown section {name!r}; choose from {', '.join(known)}"
                )
            name = canonical
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


def split_sections(cell: str) -> list[str]:
    """Split a sections cell on semicolons or commas."""
    return [part for part in (p.strip() for p in _SECTION_SPLIT.split(cell)) if part]


# --- single subscribers -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddResult:
    """Outcome of :func:`add`."""

    subscriber: Subscriber
    created: bool


def get(session: Session, email: str) -> Subscriber:
    """The subscriber with this address in any case; NotFoundError if there is none."""
    address = normalise(email, lookup=True)
    subscriber = store.get_by_key(session, address.key)
    if subscriber is None:
        raise NotFoundError(f"{address.email} is not on the list")
    return subscriber


def add(
    session: Session,
    email: str,
    *,
    name: str | None = None,
    sections: Sequence[str] | None = None,
    known_sections: Sequence[str] = (),
    pending: bool = False,
    force: bool = False,
    source: str = "cli",
    now: datetime | None = None,
    timezone: str | None = None,
) -> AddResult:
    """Add someone, or update the subscriber with the same address in any case.

    A suppressed (erased, bounced, complaining) or unsubscribed address is refused unless
    ``force`` records that they gave their consent again. timezone is an IANA zone name
    ("" clears it; None leaves it as it is).
    """
    now = now or utcnow()
    address = normalise(email)
    chosen = None if sections is None else resolve_sections(sections, known_sections)
    zone_name = None if timezone is None else clean_zone(timezone)
    suppressed = store.suppression(session, address.hash)
    if suppressed is not None and not force:
        raise InputError(
            f"{address.email} is on the suppression list ({suppressed.reason}); add it again "
            "only with the person's fresh consent, using --force"
        )
    subscriber = store.get_by_key(session, address.key, for_update=True)
    if subscriber is not None and subscriber.status in store.LEFT and not force:
        raise InputError(
            f"{address.email} is {subscriber.status}; add it again only with the person's "
            "fresh consent, using --force"
        )
    if suppressed is not None:
        store.remove_suppression(session, address.hash)
    status = Status.PENDING if pending else Status.ACTIVE
    created = subscriber is None
    if subscriber is None:
        subscriber = Subscriber(
            email=address.email, email_key=address.key, name="", sections=[],
            status=status, created_at=now, updated_at=now,
        )
        session.add(subscriber)
    elif subscriber.status != Status.ACTIVE:
        subscriber.status = status
    subscriber.email = address.email
    _set_profile(subscriber, name, chosen, zone_name)
    if subscriber.status == Status.ACTIVE and (created or force or subscriber.consent_at is None):
        subscriber.consent_at = now
        subscriber.consent_source = source + (" (re-consent)" if force else "")
        subscriber.confirmed_at = subscriber.confirmed_at or now
    elif created:
        subscriber.consent_source = source
    session.flush()
    return AddResult(subscriber=subscriber, created=created)


def update(
    session: Session,
    email: str,
    *,
    name: str | None = None,
    sections: Sequence[str] | None = None,
    known_sections: Sequence[str] = (),
    timezone: str | None = None,
    now: datetime | None = None,
) -> Subscriber:
    """Change an existing subscriber's name, sections or time zone; never their status."""
    chosen = None if sections is None else resolve_sections(sections, known_sections)
    zone_name = None if timezone is None else clean_zone(timezone)
    subscriber = get(session, email)
    _set_profile(subscriber, name, chosen, zone_name)
    subscriber.updated_at = now or utcnow()
    session.flush()
    return subscriber


def _set_profile(subscriber: Subscriber, name: str | None, sections: list[str] | None,
                 zone_name: str | None) -> None:
    """Set what was given (None leaves a field as it is); the values are already checked."""
    if name is not None:
        subscriber.name = clean_name(name)
    if sections is not None:
        subscriber.sections = sections
    if zone_name is not None:
        subscriber.timezone = zone_name


def remove(session: Session, email: str) -> Subscriber:
    """Delete a subscriber row (no suppression entry; see :func:`erase` for that)."""
    subscriber = get(session, email)
    store.delete_subscriber(session, subscriber)
    return subscriber


def iter_subscribers(session: Session, status: str | None = None) -> Iterator[Subscriber]:
    """Every subscriber, optionally of one status, in id order without loading the list."""
    if status is not None and status not in _IMPORT_STATUSES:
        raise InputError(f"unknown status {status!r}; use one of {', '.join(_IMPORT_STATUSES)}")
    return store.iter_all(session, status)


# --- import and export ---------------------------------------------------------------------


@dataclass
class ParsedImport:
    """A validated CSV file, ready to be written: one row per address (the last one wins)."""

    columns: tuple[str, ...]  # optional columns present: name, sections, timezone
    rows: dict[str, store.ImportRow] = field(default_factory=dict)  # email_key → row
    invalid: int = 0
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)
    _lines: list[int] = field(default_factory=list, repr=False)

    def _error(self, line: int, message: str) -> None:
        if len(self.errors) < MAX_REPORTED_ERRORS:
            # Keep the report in line order (a duplicate is found after its later twin).
            at = sum(1 for n in self._lines if n <= line)
            self._lines.insert(at, line)
            self.errors.insert(at, f"line {line}: {message}")


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did."""

    added: int
    updated: int
    invalid: int
    duplicates: int
    suppressed: int
    errors: tuple[str, ...]

    @property
    def skipped(self) -> int:
        """Rows not written: invalid, repeated addresses and suppressed addresses."""
        return self.invalid + self.duplicates + self.suppressed

    def summary(self) -> str:
        """One line for humans."""
        return (
            f"{self.added} added, {self.updated} updated, {self.skipped} skipped "
            f"({self.invalid} invalid, {self.duplicates} duplicate, "
            f"{self.suppressed} suppressed)"
        )


def _sniff_delimiter(first_line: str) -> str:
    if "," in first_line:
        return ","
    for candidate in (";", "\t"):
        if candidate in first_line:
            return candidate
    return ","


def _uncell(value: str) -> str:
    # Undo the export's CSV-injection guard: "'=x" was written for "=x".
    if value.startswith("'") and value[1:2] in _FORMULA_START and value[1:2]:
        return value[1:]
    return value


@dataclass(frozen=True, slots=True)
class _Header:
    """What the header line says: column positions and the optional columns present."""

    index: dict[str, int]
    width: int
    columns: tuple[str, ...]  # optional columns present: name, sections, timezone


def _checked_lines(stream: TextIO, source_name: str) -> Iterator[str]:
    """The stream's lines, refusing text that is not UTF-8 or holds NUL bytes."""
    try:
        for line in stream:
            if "\x00" in line:
                raise InputError(f"{source_name} is not a CSV file (it contains NUL bytes)")
            yield line
    except UnicodeDecodeError:
        raise InputError(
            f"{source_name} is not a UTF-8 text file; save it as CSV (UTF-8)"
        ) from None


def iter_import_rows(
    stream: TextIO, known_sections: Sequence[str] = (), *, source_name: str = "file",
) -> tuple[tuple[str, ...], Iterator[tuple[int, store.ImportRow | str]]]:
    """(optional columns present, rows): each row is (line, ImportRow) or (line, error).

    Reads the stream as it goes, so a file of any length takes the same memory. A file that
    is not CSV or lacks an email column raises InputError (at once for the header; for a
    broken quote or bad bytes further down, when the iteration reaches them).
    """
    lines = _checked_lines(stream, source_name)
    first_line = next(lines, "")
    chained = itertools.chain([first_line], lines) if first_line else iter(())
    reader = read_rows(chained, _sniff_delimiter(first_line),
                       source_name, multiline=False)
    first = next(reader, None)
    if first is None:
        raise InputError(f"{source_name} is empty; the first line must be e.g. email,name")
    names = [h.strip().lower() for h in first[1]]
    if "email" not in names:
        found = ", ".join(repr(n) for n in names[:6]) or "nothing"
        raise InputError(
            f"{source_name} has no 'email' column in its first line (found {found}); "
            "the first line must name the columns, e.g. email,name,sections"
        )
    index: dict[str, int] = {
        name: names.index(name)
        for name in ("email", "name", "sections", "status", "timezone") if name in names
    }
    header = _Header(index, len(names), tuple(c for c in ("name", "sections", "timezone")
                                              if c in index))
    return header.columns, _validated(reader, header, known_sections)


def _validated(reader: Iterator[tuple[int, list[str]]], header: _Header,
               known_sections: Sequence[str]) -> Iterator[tuple[int, store.ImportRow | str]]:
    index, width = header.index, header.width
    i_email = index["email"]
    i_name = index.get("name")
    i_sections = index.get("sections")
    i_status = index.get("status")
    i_zone = index.get("timezone")
    for line, row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > width:
            yield line, f"{len(row)} fields but the header has {width}"
            continue
        row = row + [""] * (width - len(row))
        try:
            address = normalise(_uncell(row[i_email]))
            status = ""
            if i_status is not None:
                status = row[i_status].strip().lower()
                if status and status not in _IMPORT_STATUSES:
                    raise InputError(
                        f"unknown status {status!r}; use one of "
                        + ", ".join(sorted(_IMPORT_STATUSES))
                    )
            sections = (
                resolve_sections(split_sections(row[i_sections]), known_sections)
                if i_sections is not None else []
            )
            zone_name = clean_zone(row[i_zone]) if i_zone is not None else ""
        except InputError as exc:
            yield line, str(exc)
            continue
        yield line, store.ImportRow(
            address.email, address.key,
            clean_name(_uncell(row[i_name])) if i_name is not None else "", sections, status,
            zone_name,
        )


def parse_csv(
    stream: TextIO,
    known_sections: Sequence[str] = (),
    *,
    source_name: str = "file",
    now: datetime | None = None,
) -> ParsedImport:
    """Read and validate a whole subscriber CSV before anything is written.

    Columns: email (required), name, sections (separated by ; or ,), status, timezone (an
    IANA name such as Europe/London). Other columns are ignored. A file that is not CSV or
    lacks an email column raises InputError; invalid rows are counted and the first few
    reported by line number. Holds every row in memory: import_csv streams instead.
    """
    columns, rows = iter_import_rows(stream, known_sections, source_name=source_name)
    parsed = ParsedImport(columns=columns)
    lines: dict[str, int] = {}
    for line, row in rows:
        if isinstance(row, str):
            parsed.invalid += 1
            parsed._error(line, row)
            continue
        previous = lines.get(row.email_key)
        if previous is not None:
            parsed.duplicates += 1
            parsed._error(previous, f"same address as line {line}, which is used")
        lines[row.email_key] = line
        parsed.rows[row.email_key] = row
    return parsed


def import_csv(
    session: Session, stream: TextIO, known_sections: Sequence[str] = (), *,
    source_name: str = "file", source: str = "import", now: datetime | None = None,
) -> ImportReport:
    """Validate and write a subscriber CSV of any length in the caller's one transaction.

    The same rules, errors and report as parse_csv + apply_import, in bounded memory: rows
    are validated a chunk at a time into a staging table (COPY on PostgreSQL), and repeated
    addresses (the last one wins), suppressed addresses and the upsert are worked out by the
    database. A broken file raises InputError and the caller's rollback leaves nothing.
    """
    now = now or utcnow()
    columns, rows = iter_import_rows(stream, known_sections, source_name=source_name)
    check = store.has_suppressions(session)
    imports.begin(session)
    invalid: list[tuple[int, str]] = []
    invalid_count = 0
    chunk: list[imports.StagedRow] = []
    dumped: dict[tuple[str, ...], str] = {}
    for line, row in rows:
        if isinstance(row, str):
            invalid_count += 1
            if len(invalid) < MAX_REPORTED_ERRORS:
                invalid.append((line, row))
            continue
        needs_hash = check or row.status in (Status.BOUNCED, Status.COMPLAINED)
        chunk.append(imports.StagedRow(
            line, row.email, row.email_key, row.name, row.sections, row.status, row.timezone,
            email_hash(row.email_key) if needs_hash else None,
        ))
        if len(chunk) >= _IMPORT_BATCH:
            imports.add(session, chunk, dumped)
            chunk = []
    imports.add(session, chunk, dumped)
    repeated, pairs = imports.duplicates(session, MAX_REPORTED_ERRORS)
    errors = sorted(invalid + [(a, f"same address as line {b}, which is used") for a, b in pairs])
    suppressed = imports.suppressed(session) if check else 0
    written = imports.written(session)
    before = store.count(session)
    imports.upsert(session, columns=columns, source=source, now=now)
    imports.new_suppressions(session, now)
    imports.end(session)
    added = store.count(session) - before
    return ImportReport(
        added=added, updated=written - added, invalid=invalid_count, duplicates=repeated,
        suppressed=suppressed,
        errors=tuple(f"line {line}: {message}" for line, message in errors[:MAX_REPORTED_ERRORS]),
    )


def apply_import(
    session: Session, parsed: ParsedImport, *, source: str = "import", now: datetime | None = None
) -> ImportReport:
    """Write a parsed import in the caller's single transaction; suppressed addresses are skipped.

    Added and updated are told apart by counting rows before and after; on SQLite the write
    lock makes that exact, on PostgreSQL a concurrent web sign-up may shift the split by one.
    """
    now = now or utcnow()
    rows = parsed.rows
    # Hashing 100,000 addresses costs more than asking whether there is anything to match.
    check = store.has_suppressions(session)
    hashes = {key: email_hash(key) for key in rows} if check else {}
    suppressed = store.suppressed_among(session, list(hashes.values())) if check else set()
    with_status: list[store.ImportRow] = []
    without_status: list[store.ImportRow] = []
    new_suppressions: list[tuple[str, str]] = []
    skipped = 0
    for key, row in rows.items():
        if check and hashes[key] in suppressed:
            skipped += 1
            continue
        (with_status if row.status else without_status).append(row)
        if row.status in (Status.BOUNCED, Status.COMPLAINED):
            new_suppressions.append((email_hash(key), row.status))
    before = store.count(session)
    for group, set_status in ((without_status, False), (with_status, True)):
        for start in range(0, len(group), _IMPORT_BATCH):
            store.upsert_many(
                session, group[start : start + _IMPORT_BATCH], columns=parsed.columns,
                set_status=set_status, source=source, now=now,
            )
    store.add_suppressions(session, new_suppressions, now)
    added = store.count(session) - before
    written = len(with_status) + len(without_status)
    return ImportReport(
        added=added, updated=written - added, invalid=parsed.invalid,
        duplicates=parsed.duplicates, suppressed=skipped, errors=tuple(parsed.errors),
    )


EXPORT_COLUMNS = ("email", "name", "sections", "status", "consent_at", "consent_source",
                  "confirmed_at", "unsubscribed_at", "created_at", "timezone")


def _cell(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def export_csv(session: Session, out: TextIO, status: str | None = None) -> int:
    """Write every subscriber as CSV (importable again); return how many rows."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    n = 0
    for s in iter_subscribers(session, status):
        writer.writerow([
            _cell(s.email), _cell(s.name), ";".join(_cell(x) for x in s.sections or ()), s.status,
            _iso(s.consent_at), _cell(s.consent_source), _iso(s.confirmed_at),
            _iso(s.unsubscribed_at), _iso(s.created_at), s.timezone,
        ])
        n += 1
    return n


# --- data subject requests ---------------------------------------------------------------


def export_data(session: Session, email: str) -> dict[str, Any]:
    """Everything stored about one person (GDPR art. 15), as JSON-ready data."""
    address = normalise(email, lookup=True)
    subscriber = store.get_by_key(session, address.key)
    suppressed = store.suppression(session, address.hash)
    emails = {address.email, address.key}
    if subscriber is not None:
        emails.add(subscriber.email)
    deliveries = store.deliveries_for(session, subscriber.id if subscriber else None, emails)
    bounce_events = bounce_store.for_person(session, subscriber.id if subscriber else None,
                                            emails)
    if subscriber is None and suppressed is None and not deliveries and not bounce_events:
        raise NotFoundError(f"nothing is stored about {address.email}")
    return {
        "email": address.email,
        "subscriber": None if subscriber is None else {
            "id": subscriber.id,
            "email": subscriber.email,
            "name": subscriber.name,
            "status": subscriber.status,
            "sections": list(subscriber.sections or ()),
            "timezone": subscriber.timezone or None,
            "consent_at": _iso(subscriber.consent_at) or None,
            "consent_source": subscriber.consent_source,
            "confirmed_at": _iso(subscriber.confirmed_at) or None,
            "unsubscribed_at": _iso(subscriber.unsubscribed_at) or None,
            "confirmation_sent_at": _iso(subscriber.confirmation_sent_at) or None,
            "created_at": _iso(subscriber.created_at),
            "updated_at": _iso(subscriber.updated_at),
        },
        "suppression": None if suppressed is None else {
            "reason": suppressed.reason, "since": _iso(suppressed.created_at),
        },
        "deliveries": [
            {
                "issue": issue.number,
                "issue_label": issue.label,
                "email": d.email,
                "status": d.status,
                "attempts": d.attempts,
                "message_id": d.message_id,
                "last_code": d.last_code,
                "last_reply": d.last_reply,
                "sent_at": _iso(d.sent_at) or None,
            }
            for d, issue in deliveries
        ],
        "bounce_events": [
            {
                "received_at": _iso(e.received_at), "kind": e.kind, "email": e.email,
                "status_code": e.status_code, "diagnostic": e.diagnostic, "action": e.action,
            }
            for e in bounce_events
        ],
    }


@dataclass(frozen=True, slots=True)
class EraseReport:
    """What :func:`erase` did."""

    email: str
    found: bool
    deliveries: int


def erase(session: Session, email: str, now: datetime | None = None) -> EraseReport:
    """Delete a person and the personal data in their deliveries; keep only a hashed suppression.

    The hash stops a later import or sign-up form from silently adding them back.
    """
    now = now or utcnow()
    address = normalise(email, lookup=True)
    subscriber = store.get_by_key(session, address.key, for_update=True)
    emails = {address.email, address.key}
    subscriber_id = None
    if subscriber is not None:
        emails.add(subscriber.email)
        subscriber_id = subscriber.id
    bounce_store.scrub(session, subscriber_id, emails)
    scrubbed = store.scrub_deliveries(session, subscriber_id, emails)
    if subscriber is not None:
        store.delete_subscriber(session, subscriber)
    # Erasure wins over an earlier bounce or complaint reason.
    store.remove_suppression(session, address.hash)
    store.add_suppressions(session, [(address.hash, "erased")], now)
    return EraseReport(email=address.email, found=subscriber is not None, deliveries=scrubbed)


def suppress(
    session: Session, email: str, reason: str, now: datetime | None = None
) -> Subscriber | None:
    """Stop mail to an address for good (bounce, complaint): status plus a suppression entry."""
    now = now or utcnow()
    address = normalise(email, lookup=True)
    store.add_suppressions(session, [(address.hash, reason)], now)
    subscriber = store.get_by_key(session, address.key, for_update=True)
    if subscriber is not None:
        subscriber.status = (
            Status.COMPLAINED if reason == Status.COMPLAINED else Status.BOUNCED
        )
        subscriber.unsubscribed_at = subscriber.unsubscribed_at or now
    return subscriber


def is_suppressed(session: Session, address: Address) -> Suppression | None:
    """The suppression entry for an address, if any."""
    return store.suppression(session, address.hash)


# --- double opt-in and links ---------------------------------------------------------------


def request_subscription(
    session: Session,
    address: Address,
    *,
    name: str = "",
    sections: Sequence[str] = (),
    source: str = "web",
    now: datetime | None = None,
    timezone: str = "",
) -> Subscriber | None:
    """Record a sign-up request; return the subscriber to send a confirmation email to, or None.

    Always double opt-in: a new or unsubscribed address becomes pending. An active,
    suppressed, bounced or complaining address is left alone and gets no email, and any
    address gets at most one confirmation email per CONFIRMATION_INTERVAL. The caller
    answers the same in every case, so the response says nothing about who is on the list.
    """
    now = now or utcnow()
    if store.suppression(session, address.hash) is not None:
        return None
    name = clean_name(name)
    subscriber = store.get_by_key(session, address.key, for_update=True)
    if subscriber is None:
        subscriber = store.insert_pending(session, {
            "email": address.email, "email_key": address.key, "name": name,
            "sections": list(sections), "status": Status.PENDING, "consent_source": source,
            "timezone": timezone,
            "confirmation_sent_at": now, "created_at": now, "updated_at": now,
        })
        if subscriber is not None:
            return subscriber
        # Someone else inserted it a moment ago (PostgreSQL): lock theirs and go on.
        subscriber = store.get_by_key(session, address.key, for_update=True)
        if subscriber is None:  # pragma: no cover - deleted in between
            return None
    if subscriber.status not in (Status.PENDING, Status.UNSUBSCRIBED):
        return None
    last = subscriber.confirmation_sent_at
    if last is not None and now - last < CONFIRMATION_INTERVAL:
        return None
    subscriber.status = Status.PENDING
    if name:
        subscriber.name = name
    subscriber.sections = list(sections)
    if timezone:
        subscriber.timezone = timezone
    subscriber.consent_source = source
    subscriber.confirmation_sent_at = now
    return subscriber


def by_token(session: Session, data: TokenData, *, for_update: bool = False) -> Subscriber | None:
    """The subscriber a verified token was minted for, if they still exist."""
    subscriber = store.get(session, data.subscriber_id, for_update=for_update)
    if subscriber is None or not data.matches(subscriber.email_key):
        return None
    return subscriber


def confirm(session: Session, data: TokenData, now: datetime | None = None) -> Subscriber | None:
    """Confirm a pending subscription (double opt-in); None if the link no longer applies."""
    now = now or utcnow()
    subscriber = by_token(session, data, for_update=True)
    if subscriber is None or is_suppressed(session, normalise(subscriber.email, lookup=True)):
        return None
    if subscriber.status == Status.ACTIVE:
        return subscriber
    if subscriber.status != Status.PENDING:
        return None
    subscriber.status = Status.ACTIVE
    subscriber.confirmed_at = now
    subscriber.consent_at = now
    subscriber.unsubscribed_at = None
    return subscriber


def unsubscribe(session: Session, data: TokenData, now: datetime | None = None) -> None:
    """Unsubscribe the token's subscriber at once; idempotent, and quiet if they are gone."""
    now = now or utcnow()
    subscriber = by_token(session, data, for_update=True)
    if subscriber is not None and subscriber.status in store.JOINED:
        subscriber.status = Status.UNSUBSCRIBED
        subscriber.unsubscribed_at = now


def update_preferences(
    session: Session,
    data: TokenData,
    *,
    name: str,
    sections: Sequence[str],
    known_sections: Sequence[str],
    name_max: int = NAME_MAX,
) -> Subscriber:
    """Change a subscriber's name and sections from their preferences link."""
    chosen = resolve_sections(sections, known_sections)
    subscriber = by_token(session, data, for_update=True)
    if subscriber is None or subscriber.status not in store.JOINED:
        raise NotFoundError("this address is no longer subscribed")
    subscriber.name = clean_name(name, name_max)
    subscriber.sections = chosen
    return subscriber


#: Event names as django-anymail normalises them, plus common aliases.
EVENT_ACTIONS = {
    "bounced": "bounced", "bounce": "bounced", "rejected": "bounced",
    "complained": "complained", "complaint": "complained", "spamreport": "complained",
    "unsubscribed": "unsubscribed", "unsubscribe": "unsubscribed",
}


def apply_event(session: Session, event_type: str, email: str, now: datetime | None = None) -> str:
    """Apply a provider event (bounce, complaint, unsubscribe); return what was done."""
    now = now or utcnow()
    action = EVENT_ACTIONS.get(event_type.strip().lower())
    if action is None:
        return "ignored"  # deferred, delivered, opened, …: nothing to change
    address = normalise(email, lookup=True)
    if action == "unsubscribed":
        subscriber = store.get_by_key(session, address.key, for_update=True)
        if subscriber is not None and subscriber.status in store.JOINED:
            subscriber.status = Status.UNSUBSCRIBED
            subscriber.unsubscribed_at = now
        return "unsubscribed"
    suppress(session, address.email, action, now)
    return "suppressed"
