"""Alembic migrations for digest's schema."""
