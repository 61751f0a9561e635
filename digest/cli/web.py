"""CLI commands: serve (the public web app under waitress) and form (an embeddable snippet)."""

from __future__ import annotations

import signal
from types import FrameType

import click

from digest.cli import AppContext, pass_app


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535),
              help="TCP port to listen on.")
@click.option("--workers", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Worker threads handling requests.")
@pass_app
def serve(app: AppContext, host: str, port: int, workers: int) -> None:
    """Run the subscribe, confirm, unsubscribe, preferences and archive pages.

    Uses waitress, a production WSGI server (never Flask's development server). Put it
    behind a TLS-terminating proxy and set trusted_proxies to the number of proxies (and
    trusted_proxy_address to the address the nearest one connects from, 127.0.0.1 by
    default), so rate limits see the real client address. Logs one JSON line per request
    on stderr.

    \b
    Example:
      DIGEST_SECRET_KEY=... digest serve --host 0.0.0.0 --port 8000 --workers 8
    """
    from waitress import serve as waitress_serve

    from digest.web import configure_logging, create_app, waitress_options

    configure_logging()
    wsgi = create_app(app.settings)
    # SIGTERM (systemd, docker stop) ends waitress through the finally below, so confirmation
    # emails already queued are still handed to the mail backend.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    click.echo(f"Serving {app.settings.newsletter_name} on http://{host}:{port} "
               f"({workers} threads); public URL {app.settings.base_url}", err=True)
    try:
        waitress_serve(wsgi, host=host, port=port, threads=workers, ident="digest",
                       **waitress_options(app.settings))
    finally:
        wsgi.extensions["digest"].mailer.close()
        wsgi.extensions["digest"].db.dispose()


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@click.command()
@click.option("--next", "next_url", metavar="URL",
              help="Where to send readers after they subscribe (its origin must be in "
                   "allowed_origins); default: the thank-you page of digest serve.")
@pass_app
def form(app: AppContext, next_url: str | None) -> None:
    """Print an HTML sign-up form to paste into the publication's website.

    The form posts to {base_url}/subscribe and includes the honeypot and time-trap fields.
    Add the website's origin to allowed_origins (DIGEST_ALLOWED_ORIGINS), or the server
    refuses the post.

    \b
    Example:
      digest form --next https://www.example.org/thanks > signup-snippet.html
    """
    from digest.web import render_form_snippet

    click.echo(render_form_snippet(app.settings, next_url=next_url or ""), nl=False)


COMMANDS: list[click.Command] = [serve, form]
