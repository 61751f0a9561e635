"""Subscribers: normalisation, add/import/export, erasure and suppression, the CLI adapter."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from email_validator import EmailNotValidError, validate_email
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import func, select

from digest import subscribers
from digest.cli import main
from digest.db import Database
from digest.errors import InputError, NotFoundError
from digest.models import Delivery, Issue, Subscriber, Suppression
from digest.store import subscribers as store
from digest.tokens import TokenData, binding

SECTIONS = ("Science", "Arts")


def rows(db: Database) -> list[tuple[str, str, str, list[str]]]:
    with db.read() as session:
        return [
            (s.email, s.name, s.status, list(s.sections))
            for s in session.scalars(select(Subscriber).order_by(Subscriber.id))
        ]


def count(db: Database, model: type) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def write_csv(tmp_path: Path, text: str, name: str = "list.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- normalisation ----------------------------------------------------------------------


def test_normalise_keeps_local_case_and_lowercases_the_key() -> None:
    address = subscribers.normalise("  Ada.Reader@Example.ORG ")
    assert address.email == "Ada.Reader@example.org"
    assert address.key == "ada.reader@example.org"
    assert address.ascii == "Ada.Reader@example.org"


def test_normalise_unicode_domain_and_its_idna_form_are_one_address() -> None:
    unicode_form = subscribers.normalise("leser@BÜCHER.example")
    idna_form = subscribers.normalise("leser@xn--bcher-kva.example")
    assert unicode_form.email == idna_form.email == "leser@bücher.example"
    assert unicode_form.key == idna_form.key
    assert unicode_form.ascii == "leser@xn--bcher-kva.example"
    assert subscribers.envelope_address("leser@bücher.example") == "leser@xn--bcher-kva.example"


def test_internationalised_local_part_is_refused_for_new_addresses_but_found_if_stored() -> None:
    with pytest.raises(InputError, match="non-ASCII characters before the @ \\(ü\\)"):
        subscribers.normalise("Jürgen@example.org")
    address = subscribers.normalise("Jürgen@example.org", lookup=True)
    assert address.ascii is None
    assert address.key == "jürgen@example.org"


@pytest.mark.parametrize("bad,why", [
    ("no-at-sign", "must have an @-sign"),
    ("a@b", "should have a period"),
    ("two@@example.org", ""),
    (".dot@example.org", "cannot start with a period"),
    ("Ada <ada@example.org>", "display name"),
])
def test_normalise_rejects_with_email_validators_reason(bad: str, why: str) -> None:
    with pytest.raises(InputError, match="is not a valid email address") as info:
        subscribers.normalise(bad)
    assert why in str(info.value)


_LOCAL = st.text(alphabet="abcXYZ019.-_+!#$%&'*/=?^`{|}~", min_size=1, max_size=70)
_DOMAIN = st.text(alphabet="abcxyzDEF019.-", min_size=1, max_size=40)


@hsettings(max_examples=400, deadline=None)
@given(local=_LOCAL, domain=_DOMAIN)
def test_fast_path_agrees_with_email_validator(local: str, domain: str) -> None:
    """The cached plain-ASCII path gives exactly validate_email's answer."""
    text = f"{local}@{domain}"
    try:
        valid = validate_email(text, check_deliverability=False)
        expected: tuple[str, str | None] | None = (valid.normalized, valid.ascii_email)
        if len(valid.local_part) > 64:  # RFC 5321's limit, which digest adds at the door
            expected = None
    except EmailNotValidError:
        expected = None
    try:
        got = subscribers.normalise(text)
        actual: tuple[str, str | None] | None = (got.email, got.ascii)
    except InputError:
        actual = None
    assert actual == expected


def test_clean_name_drops_controls_and_bidi_and_limits_length() -> None:
    assert subscribers.clean_name("Ada\r\nBcc: x\u202e\x00  Reader", 100) == "Ada Bcc: x Reader"
    assert len(subscribers.clean_name("N" * 500, 100)) == 100


def test_resolve_sections_uses_configured_spelling() -> None:
    assert subscribers.resolve_sections(["science", " ARTS ", "Science"], SECTIONS) == [
        "Science", "Arts"]
    with pytest.raises(InputError, match="unknown section 'Sport'; choose from Science, Arts"):
        subscribers.resolve_sections(["Sport"], SECTIONS)
    assert subscribers.resolve_sections(["Anything"], ()) == ["Anything"]


# --- add, remove, uniqueness ------------------------------------------------------------


def test_same_address_in_another_case_updates_the_row(db: Database) -> None:
    with db.write() as session:
        first = subscribers.add(session, "Ada@Example.org", name="Ada")
        assert first.created
    with db.write() as session:
        second = subscribers.add(session, "ADA@example.ORG", sections=["Arts"],
                                 known_sections=SECTIONS)
        assert not second.created
        assert second.subscriber.id == first.subscriber.id
    assert rows(db) == [("ADA@example.org", "Ada", "active", ["Arts"])]


def test_add_pending_then_active(db: Database) -> None:
    with db.write() as session:
        assert subscribers.add(session, "p@example.org", pending=True).subscriber.status == (
            "pending")
    with db.write() as session:
        result = subscribers.add(session, "p@example.org")
        assert result.subscriber.status == "active"
        assert result.subscriber.consent_source == "cli"
        assert result.subscriber.consent_at is not None


def test_add_refuses_someone_who_unsubscribed_unless_forced(db: Database) -> None:
    with db.write() as session:
        sub = subscribers.add(session, "gone@example.org").subscriber
        sub.status = "unsubscribed"
    with db.write() as session, pytest.raises(InputError, match=r"unsubscribed.*--force"):
        subscribers.add(session, "gone@example.org")
    with db.write() as session:
        again = subscribers.add(session, "gone@example.org", force=True).subscriber
        assert again.status == "active"
        assert again.consent_source == "cli (re-consent)"


def test_remove(db: Database) -> None:
    with db.write() as session:
        subscribers.add(session, "r@example.org")
    with db.write() as session:
        subscribers.remove(session, "R@example.org")
    assert rows(db) == []
    with db.write() as session, pytest.raises(NotFoundError, match="not on the list"):
        subscribers.remove(session, "r@example.org")


# --- import -------------------------------------------------------------------------------


def parse(text: str) -> subscribers.ParsedImport:
    return subscribers.parse_csv(io.StringIO(text), SECTIONS, source_name="list.csv")


def test_import_adds_updates_and_reports_invalid_rows_by_line(db: Database) -> None:
    with db.write() as session:
        subscribers.add(session, "old@example.org", name="Old")
    parsed = parse(
        "email,name,sections,extra\n"
        "new@example.org,New Reader,Science;arts,ignored\n"
        "OLD@example.org,Old Renamed,\n"
        "not-an-address,x,\n"
        "\n"
        "third@example.org,,\"Science,Arts\"\n"
        "bad-section@example.org,,Sport\n"
        "dup@example.org,First,\n"
        "dup@example.org,Second,\n"
    )
    with db.write() as session:
        report = subscribers.apply_import(session, parsed)
    assert (report.added, report.updated, report.invalid, report.duplicates) == (3, 1, 2, 1)
    assert report.summary() == (
        "3 added, 1 updated, 3 skipped (2 invalid, 1 duplicate, 0 suppressed)")
    assert report.errors == (
        "line 4: 'not-an-address' is not a valid email address: "
        "An email address must have an @-sign.",
        "line 7: unknown section 'Sport'; choose from Science, Arts",
        "line 8: same address as line 9, which is used",
    )
    assert rows(db) == [
        ("OLD@example.org", "Old Renamed", "active", []),
        ("new@example.org", "New Reader", "active", ["Science", "Arts"]),
        ("third@example.org", "", "active", ["Science", "Arts"]),
        ("dup@example.org", "Second", "active", []),
    ]


def test_import_without_name_column_keeps_names(db: Database) -> None:
    with db.write() as session:
        subscribers.add(session, "keep@example.org", name="Kept Name", pending=True)
    with db.write() as session:
        report = subscribers.apply_import(session, parse("email\nkeep@example.org\n"))
    assert report.updated == 1
    assert rows(db) == [("keep@example.org", "Kept Name", "pending", [])]


def test_import_status_never_revives_someone_who_left(db: Database) -> None:
    with db.write() as session:
        subscribers.add(session, "left@example.org").subscriber.status = "unsubscribed"
        subscribers.add(session, "stay@example.org")
    with db.write() as session:
        subscribers.apply_import(session, parse(
            "email,status\nleft@example.org,active\nstay@example.org,unsubscribed\n"
            "new@example.org,pending\nbounce@example.org,bounced\n"))
    assert [(e, s) for e, _, s, _ in rows(db)] == [
        ("left@example.org", "unsubscribed"), ("stay@example.org", "unsubscribed"),
        ("new@example.org", "pending"), ("bounce@example.org", "bounced"),
    ]
    with db.read() as session:
        stay = store.get_by_key(session, "stay@example.org")
        assert stay is not None and stay.unsubscribed_at is not None
        # A bounced row in the file also goes on the suppression list.
        assert store.suppression(session, subscribers.email_hash("bounce@example.org"))


@pytest.mark.parametrize("content,message", [
    (b"\x89PNG\r\n\x1a\n\x00\x00binary", "not a UTF-8 text file"),
    (b"name,sections\nAda,Science\n", "no 'email' column"),
    (b"", "is empty"),
    (b"email\nok@example.org\nnul\x00here@example.org\n", "NUL bytes"),
])
def test_malformed_file_exits_1_and_writes_nothing(
    runner: CliRunner, db_url: str, db: Database, tmp_path: Path, content: bytes, message: str
) -> None:
    with db.write() as session:
        subscribers.add(session, "before@example.org")
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    result = runner.invoke(main, ["--db", db_url, "subscribers", "import", str(path)])
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert result.output.startswith("Error: bad.csv ")
    assert [e for e, *_ in rows(db)] == ["before@example.org"]


def test_import_cli_summary_and_skipped_lines(
    runner: CliRunner, db_url: str, db: Database, tmp_path: Path
) -> None:
    path = write_csv(tmp_path, "email;name\nsemi@example.org;Semi Colon\nbroken@;x\n")
    result = runner.invoke(main, ["--db", db_url, "subscribers", "import", str(path)])
    assert result.exit_code == 0, result.output
    assert "skipped line 3: 'broken@' is not a valid email address" in result.output
    assert "Imported list.csv: 1 added, 0 updated, 1 skipped (1 invalid" in result.output
    assert rows(db) == [("semi@example.org", "Semi Colon", "active", [])]


# --- erasure, suppression, data export --------------------------------------------------


def add_delivery(db: Database, subscriber_id: int | None, email: str) -> None:
    now = datetime(2025, 11, 21, tzinfo=UTC)
    with db.write() as session:
        issue = session.scalar(select(Issue).where(Issue.number == 1))
        if issue is None:
            issue = Issue(number=1, label="2025-W47", window_start=now - timedelta(days=7),
                          window_end=now, status="sent")
            session.add(issue)
            session.flush()
        session.add(Delivery(issue_id=issue.id, subscriber_id=subscriber_id, email=email,
                             message_id=f"m{subscriber_id}-{email}@news.example.org",
                             status="sent", last_reply=f"250 ok <{email}>"))


def test_erase_deletes_scrubs_and_suppresses(db: Database) -> None:
    with db.write() as session:
        sub = subscribers.add(session, "Erase.Me@example.org", name="Private Person").subscriber
        other = subscribers.add(session, "keep@example.org").subscriber
    add_delivery(db, sub.id, "Erase.Me@example.org")
    add_delivery(db, other.id, "keep@example.org")
    with db.write() as session:
        report = subscribers.erase(session, "erase.me@EXAMPLE.org")
    assert report.found and report.deliveries == 1
    assert [e for e, *_ in rows(db)] == ["keep@example.org"]
    with db.read() as session:
        emails = sorted(d.email for d in session.scalars(select(Delivery)))
        assert emails == ["erased", "keep@example.org"]
        erased = session.scalar(select(Delivery).where(Delivery.email == "erased"))
        assert erased is not None and erased.last_reply == "" and erased.subscriber_id is None
        entry = session.get(Suppression, subscribers.email_hash("erase.me@example.org"))
        assert entry is not None and entry.reason == "erased"
        # Only the hash is stored.
        assert "erase" not in entry.email_hash


def test_suppression_blocks_import_form_and_plain_add(db: Database) -> None:
    with db.write() as session:
        subscribers.erase(session, "blocked@example.org")
    with db.write() as session:
        report = subscribers.apply_import(
            session, parse("email\nBlocked@example.org\nok@example.org\n"))
    assert (report.added, report.suppressed) == (1, 1)
    with db.write() as session:
        address = subscribers.normalise("blocked@example.org")
        assert subscribers.request_subscription(session, address) is None
    assert [e for e, *_ in rows(db)] == ["ok@example.org"]
    with db.write() as session, pytest.raises(InputError, match=r"suppression list.*--force"):
        subscribers.add(session, "blocked@example.org")
    with db.write() as session:
        subscribers.add(session, "blocked@example.org", force=True)
        assert store.suppression(session, subscribers.email_hash("blocked@example.org")) is None


def test_export_data_includes_deliveries(db: Database) -> None:
    with db.write() as session:
        sub = subscribers.add(session, "me@example.org", name="Me", sections=["Arts"],
                              known_sections=SECTIONS).subscriber
    add_delivery(db, sub.id, "me@example.org")
    with db.read() as session:
        data = subscribers.export_data(session, "ME@example.org")
    assert data["subscriber"]["name"] == "Me"
    assert data["subscriber"]["sections"] == ["Arts"]
    assert data["suppression"] is None
    assert [(d["issue_label"], d["status"]) for d in data["deliveries"]] == [("2025-W47", "sent")]
    json.dumps(data)  # JSON-ready
    with db.read() as session, pytest.raises(NotFoundError, match="nothing is stored"):
        subscribers.export_data(session, "stranger@example.org")


def test_export_round_trips_through_import(db: Database) -> None:
    with db.write() as session:
        subscribers.add(session, "a@example.org", name="=HYPERLINK(\"x\")", sections=["Arts"],
                        known_sections=SECTIONS)
        subscribers.add(session, "b@example.org", pending=True)
    out = io.StringIO()
    with db.read() as session:
        assert subscribers.export_csv(session, out) == 2
    text = out.getvalue()
    assert "'=HYPERLINK" in text  # spreadsheet formula guard
    with db.write() as session:
        for key in ("a@example.org", "b@example.org"):
            sub = store.get_by_key(session, key)
            assert sub is not None
            store.delete_subscriber(session, sub)
    with db.write() as session:
        report = subscribers.apply_import(session, parse(text))
    assert report.added == 2
    assert rows(db) == [("a@example.org", '=HYPERLINK("x")', "active", ["Arts"]),
                        ("b@example.org", "", "pending", [])]


# --- double opt-in domain rules ---------------------------------------------------------


def test_request_subscription_caps_confirmations_at_one_per_day(db: Database) -> None:
    now = datetime(2025, 11, 20, 12, tzinfo=UTC)
    address = subscribers.normalise("new@example.org")
    with db.write() as session:
        first = subscribers.request_subscription(session, address, now=now)
        assert first is not None and first.status == "pending"
    with db.write() as session:
        later = now + timedelta(hours=23)
        assert subscribers.request_subscription(session, address, now=later) is None
    with db.write() as session:
        again = subscribers.request_subscription(session, address, now=now + timedelta(hours=25))
        assert again is not None


def test_request_subscription_leaves_active_and_bounced_alone(db: Database) -> None:
    with db.write() as session:
        subscribers.add(session, "active@example.org")
        subscribers.add(session, "bounced@example.org").subscriber.status = "bounced"
        subscribers.add(session, "left@example.org").subscriber.status = "unsubscribed"
    with db.write() as session:
        for email in ("active@example.org", "bounced@example.org"):
            assert subscribers.request_subscription(session, subscribers.normalise(email)) is None
        left = subscribers.request_subscription(session, subscribers.normalise("left@example.org"))
        assert left is not None and left.status == "pending"


def test_confirm_and_unsubscribe_check_the_address_binding(db: Database) -> None:
    with db.write() as session:
        sub = subscribers.add(session, "bind@example.org", pending=True).subscriber
    wrong = TokenData(sub.id, binding("someone@example.org"))
    right = TokenData(sub.id, binding("bind@example.org"))
    with db.write() as session:
        assert subscribers.confirm(session, wrong) is None
        subscribers.unsubscribe(session, wrong)
    assert rows(db)[0][2] == "pending"
    with db.write() as session:
        confirmed = subscribers.confirm(session, right)
        assert confirmed is not None and confirmed.confirmed_at is not None
    with db.write() as session:
        subscribers.unsubscribe(session, right)
        subscribers.unsubscribe(session, right)  # idempotent
    assert rows(db)[0][2] == "unsubscribed"


def test_apply_event(db: Database) -> None:
    with db.write() as session:
        subscribers.add(session, "b@example.org")
        subscribers.add(session, "c@example.org")
        subscribers.add(session, "u@example.org")
    with db.write() as session:
        assert subscribers.apply_event(session, "bounce", "B@example.org") == "suppressed"
        assert subscribers.apply_event(session, "complained", "c@example.org") == "suppressed"
        assert subscribers.apply_event(session, "unsubscribed", "u@example.org") == "unsubscribed"
        assert subscribers.apply_event(session, "deferred", "u@example.org") == "ignored"
        assert subscribers.apply_event(session, "bounced", "nobody@example.org") == "suppressed"
    assert [s for _, _, s, _ in rows(db)] == ["bounced", "complained", "unsubscribed"]
    assert count(db, Suppression) == 3


def test_active_batches_is_keyset_paginated(db: Database) -> None:
    with db.write() as session:
        for i in range(7):
            subscribers.add(session, f"r{i}@example.org", pending=(i == 3))
    seen: list[str] = []
    with db.read() as session:
        after = 0
        for _ in range(10):
            batch = store.active_batches(session, after, 2)
            if not batch:
                break
            seen += [r.email for r in batch]
            after = batch[-1].id
        assert [len(b) for b in store.iter_active(session, 4)] == [4, 2]
    assert seen == [f"r{i}@example.org" for i in range(7) if i != 3]


# --- CLI ------------------------------------------------------------------------------------


def test_cli_add_list_export_remove(runner: CliRunner, db_url: str, db: Database) -> None:
    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(main, ["--db", db_url, "subscribers", *args])
        return result.exit_code, result.output

    assert run("add", "Ada@Example.org", "--name", "Ada", "--section", "Anything") == (
        0, "Added Ada@example.org (active).\n")
    assert run("add", "ada@example.org", "--pending") == (0, "Updated ada@example.org (active).\n")
    assert run("add", "b@example.org", "--pending")[0] == 0
    code, out = run("list", "--status", "pending")
    assert code == 0 and "b@example.org" in out and "ada@" not in out
    code, out = run("list")
    assert "ada@example.org" in out and "Anything" in out
    code, out = run("export")
    assert out.splitlines()[0].startswith("email,name,sections,status")
    assert len(out.splitlines()) == 3
    code, out = run("export-data", "ada@example.org")
    assert code == 0 and json.loads(out)["subscriber"]["name"] == "Ada"
    assert run("remove", "B@example.org") == (0, "Removed b@example.org.\n")
    code, out = run("remove", "b@example.org")
    assert code == 1 and out == "Error: b@example.org is not on the list\n"


def test_cli_invalid_address_exits_1_with_the_reason(runner: CliRunner, db_url: str) -> None:
    result = runner.invoke(main, ["--db", db_url, "subscribers", "add", "ada@"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: 'ada@' is not a valid email address: There must be something after the @-sign.\n")


def test_cli_erase_then_add_needs_force(runner: CliRunner, db_url: str, db: Database) -> None:
    added = runner.invoke(main, ["--db", db_url, "subscribers", "add", "e@example.org"])
    assert added.exit_code == 0
    result = runner.invoke(main, ["--db", db_url, "subscribers", "erase", "e@example.org"])
    assert result.exit_code == 0
    assert "Erased e@example.org: deleted the subscriber" in result.output
    result = runner.invoke(main, ["--db", db_url, "subscribers", "add", "e@example.org"])
    assert result.exit_code == 1
    assert "suppression list (erased)" in result.output and "--force" in result.output
    result = runner.invoke(
        main, ["--db", db_url, "subscribers", "add", "e@example.org", "--force"])
    assert result.exit_code == 0, result.output


def test_cli_help_has_examples(runner: CliRunner) -> None:
    for command in ("add", "list", "remove", "import", "export", "export-data", "erase"):
        result = runner.invoke(main, ["subscribers", command, "--help"])
        assert result.exit_code == 0 and "Example" in result.output, command


# --- streaming import (digest subscribers import) ------------------------------------------

MIXED_LIST = (
    "email,name,sections,status\n"
    "new@example.org,New Reader,Science;arts,\n"
    "OLD@example.org,Old Renamed,,\n"
    "not-an-address,x,,\n"
    "\n"
    "erased@example.org,Gone,,\n"
    "dup@example.org,First,,\n"
    "left@example.org,,,active\n"
    "dup@example.org,Second,,\n"
    "bounce@example.org,,,bounced\n"
    "dup@example.org,Third,,pending\n"
)


def test_streaming_import_gives_the_same_report_and_rows_as_parse_and_apply(
    db: Database, tmp_path: Path
) -> None:
    """import_csv (staging table, COPY on PostgreSQL) keeps every rule of the in-memory path.

    Line-numbered errors, the last of repeated addresses winning, suppressed addresses
    skipped, nobody who left revived, bounced rows suppressed.
    """
    with db.write() as session:
        subscribers.add(session, "old@example.org", name="Old")
        subscribers.add(session, "left@example.org").subscriber.status = "unsubscribed"
        subscribers.add(session, "erased@example.org")
    with db.write() as session:
        subscribers.erase(session, "erased@example.org")
    with db.write() as session:
        report = subscribers.import_csv(session, io.StringIO(MIXED_LIST), SECTIONS,
                                        source_name="list.csv")
    assert report.summary() == (
        "3 added, 2 updated, 4 skipped (1 invalid, 2 duplicate, 1 suppressed)")
    assert report.errors == (
        "line 4: 'not-an-address' is not a valid email address: "
        "An email address must have an @-sign.",
        "line 7: same address as line 9, which is used",
        "line 9: same address as line 11, which is used",
    )
    assert rows(db) == [
        ("OLD@example.org", "Old Renamed", "active", []),
        ("left@example.org", "", "unsubscribed", []),
        ("new@example.org", "New Reader", "active", ["Science", "Arts"]),
        ("bounce@example.org", "", "bounced", []),
        ("dup@example.org", "Third", "pending", []),
    ]
    with db.read() as session:
        assert store.suppression(session, subscribers.email_hash("bounce@example.org"))


def test_streaming_import_of_a_broken_file_writes_nothing(db: Database) -> None:
    """An unclosed quote far down the file: InputError naming its line, and no row written."""
    text = "email,name\n" + "".join(f"r{i}@example.org,R{i}\n" for i in range(12_000))
    text += 'late@example.org,"never closed\nmore@example.org,x\n'
    with (pytest.raises(InputError, match=r"list.csv: line 12002: a quoted field"),
          db.write() as session):
        subscribers.import_csv(session, io.StringIO(text), source_name="list.csv")
    with db.read() as session:
        assert store.count(session) == 0
