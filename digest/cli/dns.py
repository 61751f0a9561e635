"""CLI command: dns (the records to publish so inboxes trust the mail)."""

from __future__ import annotations

import click

from digest.cli import AppContext, pass_app


@click.command("dns")
@pass_app
def dns(app: AppContext) -> None:
    """Print the DNS records to publish for the configured sender. Makes no lookups.

    The DKIM TXT record (the public half of dkim_private_key, rsa-sha256 or
    ed25519-sha256), an SPF suggestion for smtp_host, a DMARC policy that starts at p=none
    with aggregate reports to dmarc_report_address, and the hosts that List-Unsubscribe
    points at. Lines starting with ";" are comments; the rest is zone-file syntax.

    \b
    Examples:
      digest dns
      digest dns > records.zone            # hand it to whoever runs your DNS
    """
    from digest.dns_records import records

    found, advice = records(app.settings)
    for line in advice:
        click.echo(f"; {line}")
    for record in found:
        click.echo(f"\n; {record.purpose}" + (f": {record.comment}" if record.comment else ""))
        click.echo(record.zone_line())


COMMANDS: list[click.Command] = [dns]
