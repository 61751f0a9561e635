"""The schema's migrations through the real `alembic` command: no silent drop of everything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, inspect

from digest.db import Database

ROOT = Path(__file__).resolve().parent.parent
ALEMBIC = Path(sys.executable).with_name("alembic")


def alembic(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ALEMBIC), *args], cwd=ROOT, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_downgrading_the_first_migration_refuses_unless_told(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'subscribers.db'}"
    Database(url).dispose()
    before = tables(url)
    assert {"subscribers", "deliveries", "issues"} <= before

    refused = alembic("-x", f"url={url}", "downgrade", "base")
    assert refused.returncode != 0
    said = refused.stdout + refused.stderr  # alembic prints "FAILED: …" on stdout
    assert "refusing to downgrade below 0001: it DROPS EVERY TABLE" in said
    assert "-x allow_drop=yes" in said
    assert "Traceback" not in said
    assert tables(url) == before

    dropped = alembic("-x", f"url={url}", "-x", "allow_drop=yes", "downgrade", "base")
    assert dropped.returncode == 0, dropped.stderr
    assert "subscribers" not in tables(url)
