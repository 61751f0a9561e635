"""CLI commands: render (thin adapters over the domain modules)."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
