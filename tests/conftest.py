"""Shared fixtures: real SQLite files in tmp_path, PostgreSQL when configured, a CLI runner.

Each area adds its fixtures in its own marked block below.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from digest.config import Settings
from digest.db import Database

POSTGRES_URL = os.environ.get("DIGEST_TEST_POSTGRES_URL", "")
# .ci/run sets this so that a missing PostgreSQL or browser fails the run instead of skipping.
REQUIRE_SERVICES = os.environ.get("DIGEST_REQUIRE_SERVICES") == "1"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def skip_or_fail(reason: str) -> None:
    """Skip a test that needs a missing service, or fail it when CI requires the service."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (DIGEST_REQUIRE_SERVICES=1)")
    pytest.skip(reason)

# --- core fixtures ---


def reset_postgres(url: str) -> None:
    """Drop everything in the test database so each test starts from an empty schema."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for an empty database, on SQLite and (when configured) PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'subscribers.db'}"
    if not POSTGRES_URL:
        skip_or_fail("set DIGEST_TEST_POSTGRES_URL to run the PostgreSQL variant")
    reset_postgres(POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture
def chromium_path() -> str:
    """Debian's chromium, for browser tests (Playwright's own download cannot work here)."""
    if not os.path.exists(CHROMIUM):
        skip_or_fail("Debian chromium is not installed: apt-get install chromium")
    return CHROMIUM


#: Flags for headless chromium on a machine with no network but loopback.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file URL in tmp_path, for behaviour that is about files and locking."""
    return f"sqlite:///{tmp_path / 'subscribers.db'}"


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A migrated database (SQLite file, and PostgreSQL when configured)."""
    database = Database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def settings(db_url: str) -> Settings:
    """Settings pointing at the test database, with a signing key and a postal address."""
    return Settings(
        database_url=db_url,
        secret_key=("test-secret-key-new", "test-secret-key-old"),
        postal_address="1 Example Street, Springfield",
        base_url="https://news.example.org",
        from_email="weekly@news.example.org",
        from_name="The Example Weekly",
    )


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CliRunner in an empty working folder with no DIGEST_* variables leaking in."""
    for key in list(os.environ):
        if key.startswith("DIGEST_") and key != "DIGEST_TEST_POSTGRES_URL":
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return CliRunner()


# --- end core fixtures ---
