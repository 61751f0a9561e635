"""Shared fixtures: real SQLite files in tmp_path, PostgreSQL when configured, a CLI runner.

Each area adds its fixtures in its own marked block below.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from digest.config import Settings
from digest.db import Database

POSTGRES_URL = os.environ.get("DIGEST_TEST_POSTGRES_URL", "")

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
        pytest.skip("set DIGEST_TEST_POSTGRES_URL to run the PostgreSQL variant")
    reset_postgres(POSTGRES_URL)
    return POSTGRES_URL


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
