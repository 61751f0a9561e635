"""Engine and sessions: SQLite pragmas and write locks, PostgreSQL, migrations on start."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from digest.config import mask_url
from digest.errors import ConfigError

MIGRATIONS = Path(__file__).parent / "migrations"

# How long a SQLite writer waits for another (serve vs send) before "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 30_000

#: Execution option that marks a read-only transaction (plain BEGIN instead of IMMEDIATE).
READ_ONLY = "digest_read_only"

# Arbitrary constant: the advisory lock that serialises migrations on PostgreSQL.
_PG_MIGRATION_LOCK = 0x6469676573


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event emit BEGIN itself (the pysqlite driver would otherwise
    # begin lazily and always DEFERRED, which turns lock upgrades into instant SQLITE_BUSY).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    # NORMAL is durable against process crashes (SIGKILL) in WAL mode; only power loss can
    # drop the last commits.
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # Writers take the write lock up front (BEGIN IMMEDIATE) so that two processes never
    # deadlock upgrading read locks; busy_timeout then makes the second one wait its turn.
    read_only = conn.get_execution_options().get(READ_ONLY, False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


class Database:
    """An engine plus session factories for write and read-only units of work."""

    def __init__(self, url: str, *, migrate: bool = True, echo: bool = False) -> None:
        self.url = url
        self.engine = make_engine(url, echo=echo)
        self._write = sessionmaker(self.engine, expire_on_commit=False)
        self._read = sessionmaker(
            self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False
        )
        if migrate:
            try:
                upgrade(self.engine)
            except BaseException:
                # The caller never gets this object to dispose of, so close the pool here.
                self.engine.dispose()
                raise

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded SQLite backend."""
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session in one write transaction: commit on success, roll back on any error."""
        with self._write() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads only; it never takes the SQLite write lock."""
        with self._read() as session, session.begin():
            yield session

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create an engine for url, with SQLite set up for several processes at once.

    SQL parameters are kept out of error messages: they hold subscribers' addresses, and
    errors end up in logs.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"database URL {mask_url(url)!r} is not valid; use sqlite:///path.db or "
            "postgresql+psycopg://user@host/dbname"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"database URL {mask_url(url)!r} is for {backend!r}; digest supports only SQLite "
            "(sqlite:///subscribers.db) and PostgreSQL (postgresql+psycopg://user@host/dbname)"
        )
    try:
        if backend == "sqlite":
            database = parsed.database or ""
            # file:…?mode=ro&uri=true is SQLite's own URI form (read-only access, say).
            if database.startswith("file:") and parsed.query.get("uri"):
                database = database[len("file:"):]
            if database and database != ":memory:":
                folder = Path(database).expanduser().resolve().parent
                if not folder.is_dir():
                    raise ConfigError(
                        f"cannot create the database {database}: folder {folder} does not exist"
                    )
            engine = create_engine(
                parsed, echo=echo, hide_parameters=True,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            )
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
            return engine
        return create_engine(parsed, echo=echo, pool_pre_ping=True, hide_parameters=True)
    except NoSuchModuleError:
        raise ConfigError(
            f"no database driver for {parsed.drivername!r}; for PostgreSQL run "
            "pip install '.[postgres]' in the digest folder (or pip install 'psycopg[binary]') "
            "and use postgresql+psycopg://…"
        ) from None
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"database driver {exc.name!r} is not installed; run pip install '.[postgres]' in "
            "the digest folder (or pip install 'psycopg[binary]')"
        ) from None


# PostgreSQL SQLSTATE classes and codes (Appendix A of its manual) worth their own advice.
_PG_PRIVILEGE = "42501"
_PG_NO_SCHEMA = "3F000"  # "no schema has been selected": the role may not use the schema
_PG_READ_ONLY = "25006"
_PG_DISK_FULL = "53100"


def describe_error(exc: SQLAlchemyError, url: str) -> str:
    """A database error as one sentence that says what to do; never the SQL or its values."""
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    state = str(getattr(orig, "sqlstate", "") or "")
    where = mask_url(url)
    text = first.lower()
    if state in (_PG_PRIVILEGE, _PG_NO_SCHEMA) or "permission denied" in text:
        return (f"the database role of {where} lacks a privilege digest needs ({first}); "
                "grant it (e.g. GRANT USAGE ON SCHEMA public and GRANT SELECT, INSERT, UPDATE, "
                "DELETE ON ALL TABLES IN SCHEMA public TO that role), or connect as the role "
                "that owns digest's tables")
    if state == _PG_READ_ONLY or "readonly database" in text or "read-only" in text:
        return (f"the database {where} is read-only ({first}); digest must be able to write "
                "to it: check the file's permissions, or the role's or server's read-only "
                "setting")
    if state == _PG_DISK_FULL or "disk is full" in text or "no space left" in text:
        return f"the disk under the database {where} is full ({first}); free some space"
    if isinstance(exc, OperationalError) and any(
        word in text for word in ("connect", "connection", "timeout", "could not translate")
    ):
        return (f"cannot reach the database {where} ({first}); check that the server runs "
                "and that the host, port and database name in the URL are right")
    return f"database error on {where}: {first}"


@cache
def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str | None:
    """The newest migration in this version of digest."""
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at, or None for an empty database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> bool:
    """Create or upgrade the schema to the newest migration. Returns True if anything ran."""
    head = head_revision()
    try:
        if current_revision(engine) == head:
            return False
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            # Re-read under the lock: another process may have migrated meanwhile.
            if MigrationContext.configure(conn).get_current_revision() == head:
                return False
            config = _alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        return True
    except SQLAlchemyError as exc:
        raise ConfigError(describe_error(exc, engine.url.render_as_string(False))) from None
    except sqlite3.OperationalError as exc:
        raise ConfigError(
            f"cannot open the database {mask_url(engine.url.render_as_string(False))}: {exc}"
        ) from None
