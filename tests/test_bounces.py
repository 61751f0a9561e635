"""Bounces and complaints: VERP envelope senders, reading reports from a real Dovecot over
IMAP and POP3, and a real relay (aiosmtpd) returning bounces to `digest bounces receive`."""

from __future__ import annotations

import asyncio
import email
import json
import re
import smtplib
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from string import Template
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner
from sqlalchemy import select, text

from digest import verp
from digest.bounces import KEPT, process
from digest.bounces.parse import parse
from digest.cli import main
from digest.config import Settings
from digest.db import Database
from digest.mail.base import OutgoingMessage
from digest.mail.memory import MemoryBackend
from digest.models import BounceEvent, Delivery, Subscriber, Suppression, utcnow
from digest.sending import send_issue
from tests import dovecot_server
from tests.conftest import (
    digest_env,
    seed_articles,
    seed_subscribers,
    send_window,
    skip_or_fail,
)

FIXTURES = Path(__file__).parent / "fixtures" / "bounces"
BOUNCE_ADDRESS = "bounces@news.example.org"


def bounce(name: str, message: OutgoingMessage, *, verp_address: str | None = None,
           recipient: str | None = None) -> bytes:
    """A fixture report about one sent message, with CRLF line ends as mail servers store it."""
    text = Template((FIXTURES / name).read_text()).substitute(
        verp=verp_address or message.sender, recipient=recipient or message.recipient,
        message_id=message.message_id,
    )
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def junk(name: str) -> bytes:
    """A fixture that is no report."""
    text = Template((FIXTURES / name).read_text()).safe_substitute(
        verp=BOUNCE_ADDRESS, recipient="r9@example.com")
    return text.replace("\n", "\r\n").encode()


@pytest.fixture
def bounce_settings(settings: Settings) -> Settings:
    """Settings with a bounce address and VERP on."""
    return settings.replace(bounce_address=BOUNCE_ADDRESS, verp=True)


@pytest.fixture
def sqlite_bounce_settings(sqlite_url: str) -> Settings:
    """The same on a SQLite file only, for tests that break the database on purpose."""
    return Settings(
        database_url=sqlite_url, secret_key=("test-secret-key-new",),
        postal_address="1 Example Street, Springfield", base_url="https://news.example.org",
        from_email="weekly@news.example.org", bounce_address=BOUNCE_ADDRESS, verp=True,
    )


def send_to(db: Database, settings: Settings, count: int, week: str = "2025-W47",
            start: int = 0) -> dict[str, OutgoingMessage]:
    """Send one issue to count new subscribers through the memory backend; by recipient."""
    window = send_window(settings, week)
    seed_articles(db, window, 2)
    if count:
        seed_subscribers(db, count, start=start)
    MemoryBackend.clear()
    send_issue(db, settings, window, backend=MemoryBackend(), ignore_check=True)
    return {m.recipient: m for m in MemoryBackend.outbox}


def status(db: Database, email_address: str) -> str:
    with db.read() as session:
        return session.scalars(
            select(Subscriber.status).where(Subscriber.email_key == email_address)).one()


def events(db: Database) -> list[BounceEvent]:
    with db.read() as session:
        return list(session.scalars(select(BounceEvent).order_by(BounceEvent.id)))


def forge(address: str) -> str:
    """The same VERP address with one character of its signature changed."""
    local, _, domain = address.partition("@")
    last = local[-1]
    return f"{local[:-1]}{'a' if last != 'a' else 'b'}@{domain}"


# --- VERP -------------------------------------------------------------------------------------


def test_verp_address_names_its_delivery_in_any_letter_case(bounce_settings: Settings) -> None:
    """bounces+<id>-<signature>@domain decodes to the delivery even after lower/upper-casing."""
    address = verp.envelope_sender(bounce_settings, 4711)
    assert re.fullmatch(r"bounces\+4711-[a-z2-7]{12}@news\.example\.org", address)
    for variant in (address, address.upper(), f"<{address}>"):
        assert verp.decode(bounce_settings, variant) == verp.VerpAddress(4711, True)
    assert verp.decode(bounce_settings, BOUNCE_ADDRESS) is None
    assert verp.decode(bounce_settings, "someone@news.example.org") is None


def test_forged_or_rekeyed_verp_addresses_do_not_verify(bounce_settings: Settings) -> None:
    """A changed id or signature fails; the old key still verifies after rotation."""
    address = verp.envelope_sender(bounce_settings, 12)
    other_id = address.replace("+12-", "+13-")
    assert verp.decode(bounce_settings, other_id) == verp.VerpAddress(13, False)
    assert verp.decode(bounce_settings, forge(address)) == verp.VerpAddress(12, False)
    assert verp.decode(bounce_settings, "bounces+whatever@news.example.org") == (
        verp.VerpAddress(None, False))
    rotated = bounce_settings.replace(
        secret_key=("brand-new-key-0001", *bounce_settings.secret_key))
    assert verp.decode(rotated, address) == verp.VerpAddress(12, True)
    stranger = bounce_settings.replace(secret_key=("someone-elses-key",))
    assert verp.decode(stranger, address) == verp.VerpAddress(12, False)


def test_every_message_of_a_send_carries_its_own_verp_sender(
    db: Database, bounce_settings: Settings
) -> None:
    """MAIL FROM is the delivery's signed address; From stays the publication's address."""
    sent = send_to(db, bounce_settings, 3)
    with db.read() as session:
        ids = {d.email: d.id for d in session.scalars(select(Delivery))}
    for recipient, message in sent.items():
        assert verp.decode(bounce_settings, message.sender) == verp.VerpAddress(
            ids[recipient], True)
        parsed = email.message_from_bytes(message.data)
        assert parsed["From"].endswith("<weekly@news.example.org>")


def test_without_verp_the_envelope_sender_is_the_bounce_address(
    db: Database, settings: Settings
) -> None:
    """bounce_address alone replaces from_email in MAIL FROM, the same for every message."""
    sent = send_to(db, settings.replace(bounce_address=BOUNCE_ADDRESS), 2)
    assert {m.sender for m in sent.values()} == {BOUNCE_ADDRESS}
    plain = send_to(db, settings, 0, week="2025-W48")
    assert {m.sender for m in plain.values()} == {"weekly@news.example.org"}


def test_verp_needs_a_bounce_address(runner: CliRunner, tmp_path: Path) -> None:
    """verp = true without bounce_address is a settings error naming what to set."""
    (tmp_path / "digest.toml").write_text("verp = true\n")
    result = runner.invoke(main, ["bounces"])
    assert result.exit_code == 1
    assert "verp = true needs bounce_address" in result.output


# --- reading reports: policy ------------------------------------------------------------------


def test_a_mangled_dsn_still_finds_its_delivery_through_verp(
    db: Database, bounce_settings: Settings
) -> None:
    """Wrong Final-Recipient and no original headers: the signed envelope address decides."""
    sent = send_to(db, bounce_settings, 2)
    message = sent["r0@example.com"]
    raw = bounce("postfix-user-unknown.eml", message, recipient="someone@else.example")
    raw = raw.split(b"Content-Description: Undelivered Message Headers")[0]
    outcome = process(db, bounce_settings, raw, source="smtp")
    assert outcome.result == "applied"
    assert status(db, "r0@example.com") == "bounced"
    assert status(db, "r1@example.com") == "active"
    [event] = events(db)
    assert (event.email, event.kind, event.status_code, event.matched_by) == (
        "r0@example.com", "hard", "5.1.1", "verp")


def test_erasing_a_subscriber_deletes_their_bounce_events(
    db: Database, bounce_settings: Settings, runner: CliRunner
) -> None:
    """export-data lists a person's events; `subscribers erase` leaves none that names them."""
    sent = send_to(db, bounce_settings, 2)
    for who in ("r0@example.com", "r1@example.com"):
        process(db, bounce_settings, bounce("postfix-user-unknown.eml", sent[who]), source="smtp")
    exported = runner.invoke(main, ["--db", bounce_settings.database_url,
                                    "subscribers", "export-data", "r0@example.com"])
    assert exported.exit_code == 0, exported.output
    [event] = json.loads(exported.output)["bounce_events"]
    assert (event["kind"], event["status_code"], event["action"]) == (
        "hard", "5.1.1", "marked bounced")
    result = runner.invoke(main, ["--db", bounce_settings.database_url,
                                  "subscribers", "erase", "r0@example.com"])
    assert result.exit_code == 0, result.output
    assert [e.email for e in events(db)] == ["r1@example.com"]


def test_soft_bounces_mark_bounced_only_after_n_in_a_row(
    db: Database, bounce_settings: Settings
) -> None:
    """Three soft-bounced issues in a row mark bounced; a delivery that got through resets."""
    settings = bounce_settings.replace(bounce_soft_limit=3, bounce_soft_days=60)
    weeks = ["2025-W44", "2025-W45", "2025-W46", "2025-W47", "2025-W48"]
    sent = [send_to(db, settings, 2 if i == 0 else 0, week) for i, week in enumerate(weeks)]
    now = utcnow()

    def soft(week_index: int, who: str) -> str:
        raw = bounce("postfix-mailbox-full.eml", sent[week_index][who])
        return process(db, settings, raw, source="imap", now=now).line

    # r0: W44 and W45 bounce, W46 gets through, W47 and W48 bounce: never three in a row.
    assert "soft bounce 1 of 3" in soft(0, "r0@example.com")
    assert "soft bounce 2 of 3" in soft(1, "r0@example.com")
    assert "soft bounce 1 of 3" in soft(3, "r0@example.com")
    assert "soft bounce 2 of 3" in soft(4, "r0@example.com")
    assert status(db, "r0@example.com") == "active"
    # r1: three issues in a row bounce; the same report read twice counts once.
    soft(0, "r1@example.com")
    soft(1, "r1@example.com")
    again = process(db, settings, bounce("postfix-mailbox-full.eml", sent[1]["r1@example.com"]),
                    source="imap", now=now)
    assert again.result == "duplicate"
    assert status(db, "r1@example.com") == "active"
    assert "marked bounced after 3 soft bounces" in soft(2, "r1@example.com")
    assert status(db, "r1@example.com") == "bounced"


def test_soft_bounces_older_than_the_window_do_not_count(
    db: Database, bounce_settings: Settings
) -> None:
    """N soft bounces must fall within bounce_soft_days of each other's last one."""
    settings = bounce_settings.replace(bounce_soft_limit=2, bounce_soft_days=10)
    first = send_to(db, settings, 1, "2025-W40")["r0@example.com"]
    second = send_to(db, settings, 0, "2025-W47")["r0@example.com"]
    long_ago = utcnow() - timedelta(days=30)
    process(db, settings, bounce("postfix-mailbox-full.eml", first), source="imap", now=long_ago)
    outcome = process(db, settings, bounce("postfix-mailbox-full.eml", second), source="imap")
    assert "soft bounce 1 of 2" in outcome.line
    assert status(db, "r0@example.com") == "active"


def test_without_verp_the_reported_address_is_used_but_with_verp_it_is_not(
    db: Database, settings: Settings
) -> None:
    """With verp off an address-only bounce acts; with verp on it could be forged, so not."""
    send_to(db, settings.replace(bounce_address=BOUNCE_ADDRESS), 2)
    fake = OutgoingMessage("not-ours@example.org", BOUNCE_ADDRESS, "r0@example.com", b"")
    raw = bounce("exim-user-unknown.eml", fake)
    on = settings.replace(bounce_address=BOUNCE_ADDRESS, verp=True)
    assert process(db, on, raw, source="imap").result == "unmatched"
    assert status(db, "r0@example.com") == "active" and events(db) == []
    off = settings.replace(bounce_address=BOUNCE_ADDRESS)
    assert process(db, off, raw, source="imap").result == "applied"
    assert status(db, "r0@example.com") == "bounced"
    assert events(db)[0].matched_by == "address"


def test_parse_reads_each_fixture_as_what_it_is() -> None:
    """DSNs from Postfix, Exim (plain text, via flufl.bounce) and Gmail, an ARF, and junk."""
    message = OutgoingMessage("m1@news.example.org", "bounces+1-aaaaaaaaaaaa@news.example.org",
                              "r0@example.com", b"")
    expected = {
        "postfix-user-unknown.eml": ("dsn", "hard", "5.1.1"),
        "postfix-mailbox-full.eml": ("dsn", "soft", "5.2.2"),
        "exim-user-unknown.eml": ("heuristic", "hard", "5.1.1"),
        "gmail-address-not-found.eml": ("dsn", "hard", "5.1.1"),
        "arf-complaint.eml": ("arf", "complaint", ""),
    }
    for name, (kind, bounce_kind, code) in expected.items():
        report = parse(bounce(name, message))
        assert report is not None, name
        [recipient] = report.recipients
        assert (report.format, recipient.kind, recipient.status, recipient.email) == (
            kind, bounce_kind, code, "r0@example.com"), name
        assert "m1@news.example.org" in report.message_ids, name
        assert message.sender in report.sent_to, name
    assert parse(junk("junk-out-of-office.eml")) is None
    assert parse(junk("junk-garbage.eml")) is None


# --- IMAP and POP3 against Dovecot ------------------------------------------------------------


@pytest.fixture
def dovecot(smtp_certificate: tuple[Path, Path]) -> Iterator[dovecot_server.Dovecot]:
    """A real Dovecot on loopback with an empty mailbox for user `bounces`."""
    try:
        server = dovecot_server.start(smtp_certificate)
    except FileNotFoundError:
        skip_or_fail("Dovecot is not installed: apt-get install dovecot-imapd dovecot-pop3d")
        raise
    yield server
    server.stop()


def mailbox_config(tmp_path: Path, settings: Settings, server: dovecot_server.Dovecot,
                   **extra: Any) -> None:
    """Write ./digest.toml for `digest bounces fetch` against the test Dovecot."""
    values: dict[str, Any] = {
        "protocol": "imap", "host": server.host, "port": server.imaps_port,
        "security": "ssl", "username": server.user, "cafile": str(server.cafile),
    }
    values.update(extra)
    body = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in values.items())
    (tmp_path / "digest.toml").write_text(
        f'database_url = "{settings.database_url}"\n'
        f'secret_key = {list(settings.secret_key)!r}\n'.replace("'", '"')
        + f'bounce_address = "{BOUNCE_ADDRESS}"\nverp = true\n'
        + f"[bounce_mailbox]\n{body}\n"
    )


def fetch(runner: CliRunner, server: dovecot_server.Dovecot, *args: str) -> Any:
    return runner.invoke(main, ["bounces", "fetch", *args],
                         env={"DIGEST_BOUNCE_MAILBOX_PASSWORD": server.password})


def test_fetch_over_imap_applies_every_report_and_keeps_what_it_cannot_read(
    db: Database, bounce_settings: Settings, dovecot: dovecot_server.Dovecot,
    runner: CliRunner, tmp_path: Path,
) -> None:
    """Postfix, Exim and Gmail hard bounces, a soft bounce, an ARF complaint, a forged VERP
    bounce and two junk messages: subscribers, events and both folders end up right."""
    sent = send_to(db, bounce_settings, 6)
    r = [sent[f"r{i}@example.com"] for i in range(6)]
    reports = [
        bounce("postfix-user-unknown.eml", r[0]),
        bounce("exim-user-unknown.eml", r[1]),
        bounce("gmail-address-not-found.eml", r[2]),
        bounce("arf-complaint.eml", r[3]),
        bounce("postfix-mailbox-full.eml", r[4]),
        bounce("postfix-user-unknown.eml", r[5], verp_address=forge(r[5].sender)),
    ]
    junk_mail = [junk("junk-out-of-office.eml"), junk("junk-garbage.eml")]
    for raw in [reports[0], junk_mail[0], *reports[1:], junk_mail[1]]:
        dovecot.append(raw)
    mailbox_config(tmp_path, bounce_settings, dovecot)

    result = fetch(runner, dovecot)
    assert result.exit_code == 0, result.output
    assert "6 processed, 2 kept in IMAP folder INBOX." in result.output
    assert "kept, not a bounce or complaint (Subject: Out of office" in result.output

    assert [status(db, m.recipient) for m in r] == [
        "bounced", "bounced", "bounced", "complained", "active", "active"]
    with db.read() as session:
        assert session.scalar(select(Suppression.reason).where(
            Suppression.reason == "complained")) == "complained"
        delivery_ids = {d.email: (d.id, d.issue_id) for d in session.scalars(select(Delivery))}
    rows = {e.email: e for e in events(db)}
    assert set(rows) == {m.recipient for m in r[:5]}  # the forged report stored nothing
    for m, kind, code in zip(r[:5], ["hard", "hard", "hard", "complaint", "soft"],
                             ["5.1.1", "5.1.1", "5.1.1", "", "5.2.2"], strict=True):
        row = rows[m.recipient]
        assert (row.kind, row.status_code, row.matched_by, row.source) == (
            kind, code, "verp", "imap")
        assert (row.delivery_id, row.issue_id) == delivery_ids[m.recipient]
    assert "User unknown in virtual mailbox table" in rows["r0@example.com"].diagnostic
    assert "Mailbox full" in rows["r4@example.com"].diagnostic

    # Processed mail moved out; junk stays in INBOX, unread.
    assert sorted(dovecot.folder("INBOX")) == sorted(junk_mail)
    assert all("\\Seen" not in flags for flags in dovecot.flags("INBOX"))
    assert sorted(dovecot.folder("digest-processed")) == sorted(reports)

    # A second run reads the junk again, reports it again, and changes nothing.
    again = fetch(runner, dovecot)
    assert again.exit_code == 0 and "0 processed, 2 kept" in again.output
    assert len(events(db)) == 5

    listing = runner.invoke(main, ["bounces"])
    assert listing.exit_code == 0
    assert "complaint  r3@example.com  2025-W47" in listing.output
    assert "→ marked bounced" in listing.output
    show = runner.invoke(main, ["issues", "show", "2025-W47"])
    assert "bounces  3 hard, 1 soft, 0 refused by policy, 0 delayed; complaints 1" in show.output


def test_fetch_with_starttls_deletes_when_no_processed_folder_is_set(
    db: Database, bounce_settings: Settings, dovecot: dovecot_server.Dovecot,
    runner: CliRunner, tmp_path: Path,
) -> None:
    """STARTTLS on the plain port, processed = "": the report is deleted, junk stays."""
    sent = send_to(db, bounce_settings, 1)
    report = bounce("gmail-address-not-found.eml", sent["r0@example.com"])
    dovecot.append(report)
    dovecot.append(junk("junk-out-of-office.eml"))
    mailbox_config(tmp_path, bounce_settings, dovecot, port=dovecot.imap_port,
                   security="starttls", processed="")
    result = fetch(runner, dovecot)
    assert result.exit_code == 0, result.output
    assert status(db, "r0@example.com") == "bounced"
    assert dovecot.folder("INBOX") == [junk("junk-out-of-office.eml")]
    assert dovecot.folder("digest-processed") == []


def test_fetch_over_pop3_deletes_processed_mail_and_leaves_junk(
    db: Database, bounce_settings: Settings, dovecot: dovecot_server.Dovecot,
    runner: CliRunner, tmp_path: Path,
) -> None:
    """POP3 with STLS: DELE after the commit, QUIT makes it final; junk is not deleted."""
    sent = send_to(db, bounce_settings, 2)
    dovecot.append(bounce("arf-complaint.eml", sent["r0@example.com"]))
    dovecot.append(junk("junk-garbage.eml"))
    dovecot.append(bounce("exim-user-unknown.eml", sent["r1@example.com"]))
    mailbox_config(tmp_path, bounce_settings, dovecot, protocol="pop3",
                   port=dovecot.pop3_port, security="starttls")
    result = fetch(runner, dovecot)
    assert result.exit_code == 0, result.output
    assert "2 processed, 1 kept in the POP3 mailbox." in result.output
    assert status(db, "r0@example.com") == "complained"
    assert status(db, "r1@example.com") == "bounced"
    assert {e.source for e in events(db)} == {"pop3"}
    assert dovecot.pop3_count() == 1
    assert dovecot.folder("INBOX") == [junk("junk-garbage.eml")]


def test_fetch_leaves_mail_in_the_mailbox_when_its_transaction_fails(
    sqlite_bounce_settings: Settings, dovecot: dovecot_server.Dovecot,
    runner: CliRunner, tmp_path: Path,
) -> None:
    """A database that refuses the write: the run fails and the report stays in INBOX."""
    settings = sqlite_bounce_settings
    db = Database(settings.database_url)
    sent = send_to(db, settings, 1)
    report = bounce("postfix-user-unknown.eml", sent["r0@example.com"])
    dovecot.append(report)
    with db.write() as session:
        session.execute(text("DROP TABLE bounce_events"))
    mailbox_config(tmp_path, settings, dovecot)
    result = fetch(runner, dovecot)
    assert result.exit_code != 0
    assert dovecot.folder("INBOX") == [report]
    assert dovecot.folder("digest-processed") == []
    assert status(db, "r0@example.com") == "active"
    db.dispose()


def test_fetch_refuses_a_certificate_it_cannot_verify(
    db: Database, bounce_settings: Settings, dovecot: dovecot_server.Dovecot,
    runner: CliRunner, tmp_path: Path,
) -> None:
    """Without the CA file the self-signed server is refused: exit 1, mail untouched."""
    sent = send_to(db, bounce_settings, 1)
    dovecot.append(bounce("postfix-user-unknown.eml", sent["r0@example.com"]))
    mailbox_config(tmp_path, bounce_settings, dovecot, cafile="")
    result = fetch(runner, dovecot)
    assert result.exit_code == 1
    assert "does not verify" in result.output and "bounce_mailbox_cafile" in result.output
    assert status(db, "r0@example.com") == "active"
    assert len(dovecot.folder("INBOX")) == 1


def test_fetch_names_the_password_setting_when_login_fails(
    db: Database, bounce_settings: Settings, dovecot: dovecot_server.Dovecot,
    runner: CliRunner, tmp_path: Path,
) -> None:
    """A wrong password exits 1 and says which settings to check, without printing it."""
    mailbox_config(tmp_path, bounce_settings, dovecot)
    result = runner.invoke(main, ["bounces", "fetch"],
                           env={"DIGEST_BOUNCE_MAILBOX_PASSWORD": "wrong-password"})
    assert result.exit_code == 1
    assert "DIGEST_BOUNCE_MAILBOX_PASSWORD" in result.output
    assert "wrong-password" not in result.output


def test_plain_imap_is_refused_for_a_host_that_is_not_loopback(
    runner: CliRunner, tmp_path: Path
) -> None:
    """insecure-loopback means loopback: any other host is a settings error."""
    (tmp_path / "digest.toml").write_text(
        '[bounce_mailbox]\nhost = "mail.example.org"\nsecurity = "insecure-loopback"\n')
    result = runner.invoke(main, ["bounces", "fetch"])
    assert result.exit_code == 1
    assert "only allowed to this machine" in result.output


# --- a relay returning bounces to `digest bounces receive` ------------------------------------


class BouncingRelay:
    """aiosmtpd as the relay: accepts every message, and for dead addresses returns a
    Postfix-style DSN to the message's envelope sender at the bounce receiver."""

    def __init__(self, receiver_port: int, dead: dict[str, str], *, lmtp: bool) -> None:
        self.receiver_port = receiver_port
        self.dead = dead  # recipient → fixture name
        self.lmtp = lmtp
        self.returned: list[str] = []
        self.errors: list[BaseException] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = envelope.original_content
        message_id = email.message_from_bytes(data)["Message-ID"].strip("<>")
        for recipient in envelope.rcpt_tos:
            if recipient in self.dead:
                original = OutgoingMessage(message_id, envelope.mail_from, recipient, data)
                await asyncio.to_thread(self._return, bounce(self.dead[recipient], original),
                                        envelope.mail_from)
        return "250 2.0.0 Queued"

    def _return(self, report: bytes, to: str) -> None:
        try:
            client_class = smtplib.LMTP if self.lmtp else smtplib.SMTP
            with client_class("127.0.0.1", self.receiver_port, timeout=10) as client:
                if self.lmtp:
                    client.ehlo_or_helo_if_needed = lambda: None  # type: ignore[method-assign]
                    client.docmd("LHLO", "relay.test")
                client.sendmail("", [to], report)
            self.returned.append(to)
        except BaseException as exc:
            self.errors.append(exc)


def start_receiver(digest_process: Any, settings: Settings, tmp_path: Path,
                   *args: str) -> tuple[subprocess.Popen[bytes], int]:
    """Run `digest bounces receive` on a free loopback port; wait for its first line."""
    env = digest_env(settings, DIGEST_BOUNCE_ADDRESS=BOUNCE_ADDRESS, DIGEST_VERP="true",
                     DIGEST_BOUNCE_KEEP_DIR=str(tmp_path / "kept"))
    proc = digest_process(["bounces", "receive", "--listen", "127.0.0.1:0", *args], env)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    match = re.search(r"on 127\.0\.0\.1:(\d+)", line)
    assert match, (line, proc.stderr.read() if proc.poll() is not None else "")  # type: ignore[union-attr]
    return proc, int(match[1])


def wait_until(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("lmtp", [False, True], ids=["smtp", "lmtp"])
def test_a_relay_returns_bounces_to_digest_bounces_receive(
    db: Database, bounce_settings: Settings, digest_process: Any, tmp_path: Path, lmtp: bool,
) -> None:
    """digest send → relay → DSN to the VERP sender → receiver subprocess → subscriber bounced."""
    _, port = start_receiver(digest_process, bounce_settings, tmp_path,
                             *(["--lmtp"] if lmtp else []))
    relay = BouncingRelay(port, {"r1@example.com": "postfix-user-unknown.eml",
                                 "r2@example.com": "gmail-address-not-found.eml"}, lmtp=lmtp)
    controller = Controller(relay, hostname="127.0.0.1", port=dovecot_server.free_port())
    controller.start()
    try:
        window = send_window(bounce_settings)
        seed_articles(db, window, 2)
        seed_subscribers(db, 4)
        relay_settings = bounce_settings.replace(
            backend="smtp", smtp_host="127.0.0.1", smtp_port=controller.port,
            smtp_security="none", smtp_timeout=10.0)
        send_issue(db, relay_settings, window, ignore_check=True)
        wait_until(lambda: len(relay.returned) + len(relay.errors) == 2)
        assert relay.errors == []
        wait_until(lambda: len(events(db)) == 2)
    finally:
        controller.stop()
    assert [status(db, f"r{i}@example.com") for i in range(4)] == [
        "active", "bounced", "bounced", "active"]
    assert {(e.email, e.kind, e.source, e.matched_by) for e in events(db)} == {
        ("r1@example.com", "hard", "lmtp" if lmtp else "smtp", "verp"),
        ("r2@example.com", "hard", "lmtp" if lmtp else "smtp", "verp"),
    }


def test_the_receiver_keeps_junk_refuses_strangers_and_ignores_forgeries(
    db: Database, bounce_settings: Settings, digest_process: Any, tmp_path: Path,
) -> None:
    """Junk is written to bounce_keep_dir; other recipients get 550; a forged VERP does nothing."""
    sent = send_to(db, bounce_settings, 1)
    proc, port = start_receiver(digest_process, bounce_settings, tmp_path)
    message = sent["r0@example.com"]
    forged = forge(message.sender)
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("", [BOUNCE_ADDRESS], junk("junk-out-of-office.eml"))
        client.sendmail("", [forged], bounce("postfix-user-unknown.eml", message,
                                             verp_address=forged))
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("", ["postmaster@news.example.org"], b"Subject: x\r\n\r\nx\r\n")
    kept = list((tmp_path / "kept").glob("*.eml"))
    assert [p.read_bytes() for p in kept] == [junk("junk-out-of-office.eml")]
    assert status(db, "r0@example.com") == "active"
    assert events(db) == []
    proc.terminate()
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert b"forged" in out and b"kept" in out


def test_the_receiver_answers_451_when_it_cannot_store_a_report(
    sqlite_bounce_settings: Settings, digest_process: Any, tmp_path: Path,
) -> None:
    """The mail server is told to try again later, and nothing about the reader changed."""
    settings = sqlite_bounce_settings
    db = Database(settings.database_url)
    sent = send_to(db, settings, 1)
    message = sent["r0@example.com"]
    _, port = start_receiver(digest_process, settings, tmp_path)
    with db.write() as session:
        session.execute(text("DROP TABLE bounce_events"))
    with (smtplib.SMTP("127.0.0.1", port, timeout=10) as client,
          pytest.raises(smtplib.SMTPDataError) as info):
        client.sendmail("", [message.sender], bounce("postfix-user-unknown.eml", message))
    assert info.value.smtp_code == 451
    assert status(db, "r0@example.com") == "active"
    db.dispose()


def test_unparseable_mail_is_reported_as_kept_by_process(
    db: Database, bounce_settings: Settings
) -> None:
    """process() never stores anything for junk: the caller keeps the message."""
    assert process(db, bounce_settings, junk("junk-garbage.eml"), source="smtp").result == KEPT
    assert events(db) == []


def test_receive_needs_a_bounce_address(runner: CliRunner) -> None:
    """Without bounce_address the receiver does not start and says what to set."""
    result = runner.invoke(main, ["bounces", "receive", "--listen", "127.0.0.1:0"])
    assert result.exit_code == 1
    assert "bounce_address is not set" in result.output

