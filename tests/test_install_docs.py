"""The README's install lines work on a fresh machine as written: they install this clone.

The PyPI name ``digest`` belongs to an unrelated project, so no documented command may
install by that name; every ``pip install`` in the README installs from the clone.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pip_installs(text: str) -> list[str]:
    """The argument lists of every `pip install` command in text."""
    return [m.group(1).strip() for m in re.finditer(r"pip install ([^`\n&]+)", text)]


def test_the_distribution_is_not_named_like_the_unrelated_pypi_project() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "digest-newsletter"
    assert project["scripts"] == {"digest": "digest.cli:main"}


def test_every_readme_install_line_installs_this_clone() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = set(project["optional-dependencies"])
    lines = pip_installs((ROOT / "README.md").read_text())
    assert lines, "the README shows how to install"
    for args in lines:
        targets = [a.strip("'\"") for a in args.split() if not a.startswith("-")]
        for target in targets:
            if target.startswith(".") or target.startswith("psycopg"):
                match = re.fullmatch(r"\.(?:\[([\w,]+)\])?", target)
                if match and match.group(1):
                    assert set(match.group(1).split(",")) <= extras, args
                continue
            raise AssertionError(f"README installs {target!r} by name: {args}")


def test_error_messages_name_the_clone_install_too() -> None:
    for path in (ROOT / "digest").rglob("*.py"):
        assert "pip install 'digest[" not in path.read_text(), path
