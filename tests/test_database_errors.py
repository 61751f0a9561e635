"""Database faults end in a clear error, not a traceback, and the data stays as it was.

An unreachable server, a role without privileges, a read-only SQLite file, and a database
that stops accepting writes right after the mail server said 250.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from digest.cli import main
from digest.config import Settings
from digest.db import Database
from digest.mail.base import OutgoingMessage, SendResult
from digest.mail.smtp import SMTPBackend
from digest.models import Delivery, Subscriber
from tests.conftest import (
    POSTGRES_URL,
    reset_postgres,
    seed_articles,
    seed_subscribers,
    send_window,
    skip_or_fail,
)
from tests.smtp_server import SMTPTestServer

KEY = "database-errors-secret-key-0123"
ROLE = f"digest_cli_sender_{os.getpid()}"


def test_init_against_an_unreachable_postgresql_names_it_without_the_password(
    runner: CliRunner
) -> None:
    result = runner.invoke(main, ["--db", "postgresql+psycopg://digest:s3cret@127.0.0.1:1/x",
                                  "init"])
    assert result.exit_code == 1
    assert result.output.startswith(
        "Error: cannot reach the database postgresql+psycopg://digest:***@127.0.0.1:1/x")
    assert "check that the server runs" in result.output
    assert "s3cret" not in result.output and "Traceback" not in result.output


def test_a_read_only_sqlite_file_is_a_clear_error(runner: CliRunner, tmp_path: Path) -> None:
    assert runner.invoke(main, ["subscribers", "add", "ada@example.org"]).exit_code == 0
    read_only = f"sqlite:///file:{tmp_path / 'subscribers.db'}?mode=ro&uri=true"
    result = runner.invoke(main, ["--db", read_only, "subscribers", "add", "bob@example.org"])
    assert result.exit_code == 1, result.output
    assert "is read-only (attempt to write a readonly database)" in result.output
    assert "Nothing was half-written." in result.output
    listing = runner.invoke(main, ["--db", read_only, "subscribers", "list"])
    assert listing.exit_code == 0 and "ada@example.org" in listing.output
    assert "bob@" not in listing.output


@pytest.fixture
def postgres() -> Iterator[tuple[str, str]]:
    """(owner URL, URL of a login role with no privileges on digest's tables)."""
    if not POSTGRES_URL:
        skip_or_fail("set DIGEST_TEST_POSTGRES_URL to run the PostgreSQL tests")
    reset_postgres(POSTGRES_URL)
    Database(POSTGRES_URL).dispose()  # migrated, as its owner
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP ROLE IF EXISTS {ROLE}"))
        conn.execute(text(f"CREATE ROLE {ROLE} LOGIN"))
    yield POSTGRES_URL, make_url(POSTGRES_URL).set(username=ROLE).render_as_string(False)
    reset_postgres(POSTGRES_URL)  # drops what the role was granted
    with admin.connect() as conn:
        conn.execute(text(f"DROP ROLE IF EXISTS {ROLE}"))
    admin.dispose()


def grant(owner_url: str, *statements: str) -> None:
    engine = create_engine(owner_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for statement in statements:
            conn.execute(text(statement.format(role=ROLE)))
    engine.dispose()


def test_a_role_without_privileges_is_told_what_to_grant(
    runner: CliRunner, postgres: tuple[str, str]
) -> None:
    _, limited = postgres
    result = runner.invoke(main, ["--db", limited, "subscribers", "list"])
    assert result.exit_code == 1, result.output
    assert "lacks a privilege digest needs (no schema has been selected" in result.output
    assert "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public" in (
        result.output)
    # With the schema but not the tables: the same advice.
    grant(postgres[0], "GRANT USAGE ON SCHEMA public TO {role}")
    tables = runner.invoke(main, ["--db", limited, "subscribers", "list"])
    assert tables.exit_code == 1, tables.output
    assert "lacks a privilege digest needs (permission denied for table" in tables.output
    assert "Traceback" not in result.output


class RevokeAfterFirstBatch(SMTPBackend):
    """The real SMTP backend; right after the server accepted the first batch, the role
    loses UPDATE on deliveries (a read-only role, a full disk: the write after the 250 fails).
    """

    owner_url = ""
    batches = 0

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        results = super().send_messages(messages)
        cls = type(self)
        cls.batches += 1
        if cls.batches == 1:
            grant(cls.owner_url, "REVOKE UPDATE ON deliveries FROM {role}")
        return results


def test_a_write_that_fails_after_the_250_loses_nothing_and_a_rerun_resends_only_that(
    runner: CliRunner, postgres: tuple[str, str], smtp_server: SMTPTestServer,
) -> None:
    owner, limited = postgres
    grant(owner, "GRANT USAGE ON SCHEMA public TO {role}",
          "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
          "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}")
    db = Database(owner)
    seed_articles(db, send_window(Settings()), 2)
    seed_subscribers(db, 12)
    RevokeAfterFirstBatch.owner_url, RevokeAfterFirstBatch.batches = owner, 0
    env = {
        "DIGEST_DATABASE_URL": limited,
        "DIGEST_SECRET_KEY": KEY,
        "DIGEST_POSTAL_ADDRESS": "1 Example Street, Springfield",
        "DIGEST_BASE_URL": "https://news.example.org",
        "DIGEST_FROM_EMAIL": "weekly@news.example.org",
        "DIGEST_BACKEND": f"{__name__}:RevokeAfterFirstBatch",
        "DIGEST_SMTP_HOST": smtp_server.host,
        "DIGEST_SMTP_PORT": str(smtp_server.port),
        "DIGEST_SMTP_SECURITY": "none",
        "DIGEST_SEND_INFLIGHT": "4",
        "DIGEST_SEND_LEASE_SECONDS": "2",
    }
    result = runner.invoke(main, ["send", "--week", "2025-W47"], env=env)
    assert result.exit_code == 1, result.output
    assert "lacks a privilege digest needs" in result.output
    assert "left in flight are the only ones whose outcome is not stored" in result.output
    assert "it resends only those (with the same Message-IDs" in result.output
    assert "Traceback" not in result.output
    first_ids = set(smtp_server.message_ids)
    assert len(first_ids) >= 4
    with db.read() as session:
        in_flight = set(session.scalars(
            select(Delivery.message_id).where(Delivery.status == "inflight")))
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 12
    # Every message the server took is accounted for: in flight, never marked unsent.
    assert first_ids <= {m.strip("<>") for m in in_flight}

    grant(owner, "GRANT UPDATE ON deliveries TO {role}")
    time.sleep(2.5)  # the in-flight lease (send_lease_seconds) runs out
    RevokeAfterFirstBatch.batches = 1  # no more faults
    again = runner.invoke(main, ["send", "--week", "2025-W47"],
                          env={**env, "DIGEST_SEND_LEASE_SECONDS": "120"})
    assert again.exit_code == 0, again.output
    assert "12 sent, 0 failed, 0 pending" in again.output
    ids = smtp_server.message_ids
    twice = {m for m in set(ids) if ids.count(m) > 1}
    assert twice == first_ids  # only the batch whose result was lost went out twice
    assert len(set(ids)) == 12
    db.dispose()
