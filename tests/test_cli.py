"""The command line as a whole: help texts with examples, documented commands, error shapes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from digest.cli import main

ROOT = Path(__file__).resolve().parent.parent


def all_commands() -> list[tuple[str, click.Command]]:
    """Every command and subcommand, with its full name."""
    found: list[tuple[str, click.Command]] = []

    def walk(prefix: str, group: click.Group) -> None:
        for name, command in sorted(group.commands.items()):
            full = f"{prefix} {name}".strip()
            found.append((full, command))
            if isinstance(command, click.Group):
                walk(full, command)

    walk("", main)
    return found


@pytest.mark.parametrize(("name", "command"), all_commands(), ids=lambda v: str(v))
def test_every_command_has_help_with_an_example(name: str, command: click.Command) -> None:
    """`digest X --help` explains the command and shows at least one way to run it."""
    result = CliRunner().invoke(main, [*name.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert command.help and len(command.help.strip()) > 20, name
    if not isinstance(command, click.Group):
        assert re.search(r"Examples?:", result.output), f"`digest {name} --help` has no example"
        assert "digest " in result.output.split("Example", 1)[1]


def test_every_top_level_command_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name, _ in all_commands() if " " not in name
               and f"digest {name}" not in readme]
    assert not missing, f"README does not document: {missing}"


def test_unknown_command_and_bad_option_are_usage_errors() -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["frobnicate"]).exit_code == 2
    assert runner.invoke(main, ["preview", "--format", "pdf"]).exit_code == 2


def test_python_dash_m_runs_the_same_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "digest", "--version"], capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert result.returncode == 0
    assert "digest, version" in result.stdout
