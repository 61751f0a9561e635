"""CLI commands: the ``subscribers`` group (thin adapters over digest.subscribers)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from digest import subscribers
from digest.cli import AppContext, pass_app
from digest.models import SubscriberStatus

STATUSES = [s.value for s in SubscriberStatus]


@click.group("subscribers")
def subscribers_group() -> None:
    """Manage the subscriber list: add, import, export, remove, erase.

    \b
    Examples:
      digest subscribers add reader@example.org --name "Ada" --section Science
      digest subscribers import list.csv
      digest subscribers list --status active
    """


@subscribers_group.command("add")
@click.argument("email")
@click.option("--name", default=None, help="The subscriber's name.")
@click.option("--section", "sections", multiple=True, metavar="S",
              help="A section to receive (repeatable; none means every section).")
@click.option("--pending", is_flag=True,
              help="Add as pending (not yet confirmed) instead of active.")
@click.option("--force", is_flag=True,
              help="Re-add an unsubscribed or suppressed address: they gave consent again.")
@click.option("--timezone", "zone_name", metavar="ZONE", default=None,
              help="The reader's IANA time zone, e.g. Europe/London (for deliver_at local).")
@pass_app
def add_cmd(
    app: AppContext, email: str, name: str | None, sections: tuple[str, ...], pending: bool,
    force: bool, zone_name: str | None,
) -> None:
    """Add a subscriber, or update the one with the same address in any case.

    \b
    Examples:
      digest subscribers add Reader@Example.org --name "Ada Reader" --section Science
      digest subscribers add kiri@example.org --timezone Pacific/Auckland
    """
    with app.db.write() as session:
        result = subscribers.add(
            session, email, name=name, sections=sections or None,
            known_sections=app.settings.sections, pending=pending, force=force,
            timezone=zone_name,
        )
        s = result.subscriber
        verb = "Added" if result.created else "Updated"
        click.echo(f"{verb} {s.email} ({s.status}).")


@subscribers_group.command("update")
@click.argument("email")
@click.option("--name", default=None, help="The subscriber's new name.")
@click.option("--section", "sections", multiple=True, metavar="S",
              help="Replace the chosen sections (repeatable).")
@click.option("--timezone", "zone_name", metavar="ZONE", default=None,
              help="The reader's IANA time zone; \"\" clears it (the publication's zone).")
@pass_app
def update_cmd(app: AppContext, email: str, name: str | None, sections: tuple[str, ...],
               zone_name: str | None) -> None:
    """Change a subscriber's name, sections or time zone, never their status.

    \b
    Examples:
      digest subscribers update ada@example.org --timezone America/Los_Angeles
      digest subscribers update ada@example.org --timezone ""
    """
    with app.db.write() as session:
        s = subscribers.update(session, email, name=name, sections=sections or None,
                               known_sections=app.settings.sections, timezone=zone_name)
        click.echo(f"Updated {s.email}" + (f" (time zone {s.timezone})." if s.timezone else "."))


@subscribers_group.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="Only subscribers with this status.")
@pass_app
def list_cmd(app: AppContext, status: str | None) -> None:
    """Print subscribers as a table: email, name, status, sections.

    \b
    Example:
      digest subscribers list --status pending
    """
    n = 0
    with app.db.read() as session:
        click.echo(f"{'email':<40} {'name':<24} {'status':<12} sections")
        for s in subscribers.iter_subscribers(session, status):
            sections = ", ".join(s.sections or ()) or "(all)"
            click.echo(f"{s.email:<40} {s.name:<24} {s.status:<12} {sections}")
            n += 1
    click.echo(f"{n} subscriber{'s' if n != 1 else ''}", err=True)


@subscribers_group.command("remove")
@click.argument("email")
@pass_app
def remove_cmd(app: AppContext, email: str) -> None:
    """Delete a subscriber. To also keep them from being re-added, use `erase`.

    \b
    Example:
      digest subscribers remove reader@example.org
    """
    with app.db.write() as session:
        removed = subscribers.remove(session, email)
    click.echo(f"Removed {removed.email}.")


@subscribers_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_app
def import_cmd(app: AppContext, file: Path) -> None:
    """Import subscribers from a CSV file in one transaction.

    Columns: email (required), name, sections (separated by ; or ,), status (active,
    pending, unsubscribed, bounced, complained; default active). An existing address is
    updated; nobody who unsubscribed is made active again; suppressed (erased, bounced,
    complaining) addresses are skipped. Invalid rows are skipped and listed by line.

    \b
    Example:
      digest subscribers import list.csv
    """
    with file.open(encoding="utf-8-sig", newline="") as stream, app.db.write() as session:
        report = subscribers.import_csv(session, stream, app.settings.sections,
                                        source_name=file.name, source=f"import {file.name}")
    for error in report.errors:
        click.echo(f"  skipped {error}", err=True)
    more = report.invalid + report.duplicates - len(report.errors)
    if more > 0:
        click.echo(f"  … and {more} more", err=True)
    click.echo(f"Imported {file.name}: {report.summary()}.")


@subscribers_group.command("export")
@click.option("--status", type=click.Choice(STATUSES), help="Only subscribers with this status.")
@pass_app
def export_cmd(app: AppContext, status: str | None) -> None:
    """Write every subscriber as CSV to standard output (importable again).

    \b
    Example:
      digest subscribers export > subscribers.csv
    """
    with app.db.read() as session:
        subscribers.export_csv(session, sys.stdout, status)


@subscribers_group.command("export-data")
@click.argument("email")
@pass_app
def export_data_cmd(app: AppContext, email: str) -> None:
    """Print everything stored about one person as JSON, deliveries included.

    \b
    Example:
      digest subscribers export-data reader@example.org > reader.json
    """
    with app.db.read() as session:
        data = subscribers.export_data(session, email)
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@subscribers_group.command("erase")
@click.argument("email")
@pass_app
def erase_cmd(app: AppContext, email: str) -> None:
    """Delete a person and the personal data in their delivery records.

    Only a hash of the address is kept, so a later import or sign-up cannot add them back
    silently; `add --force` does, with their fresh consent.

    \b
    Example:
      digest subscribers erase reader@example.org
    """
    with app.db.write() as session:
        report = subscribers.erase(session, email)
    what = "deleted the subscriber" if report.found else "not on the list"
    click.echo(
        f"Erased {report.email}: {what}, {report.deliveries} delivery record(s) scrubbed; "
        "the address is kept only as a hash so it is not added again."
    )


COMMANDS: list[click.Command] = [subscribers_group]
