"""The database layer: the one migration builds exactly the schema that models.py declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from digest.db import Database
from digest.models import Base


def test_the_migration_matches_the_models(db: Database) -> None:
    """Several people edit 0001 and models.py at once: a column in one only fails here."""
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
