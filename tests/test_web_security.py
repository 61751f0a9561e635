"""Attacks on the public web app (and what its input reaches) that the review found.

Each test names the behaviour it protects; tests/test_web.py covers the ordinary defences.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from digest import subscribers, tokens
from digest.config import Settings
from digest.db import Database
from digest.errors import ConfigError, InputError
from digest.mail.base import OutgoingMessage
from tests.conftest import WEB_ORIGIN
from tests.test_web import add_active, path_of, signed_post, snapshot, subscribe

# --- request parsing ------------------------------------------------------------------------


def test_deeply_nested_json_gets_400_not_a_server_error(
    client: FlaskClient, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """JSON nested deeper than the parser's stack is a bad request, not a logged 500.

    Without this, any anonymous client could make /subscribe raise RecursionError, answer 500
    and write a full traceback to the log with 5 KB of brackets per request.
    """
    with caplog.at_level(logging.ERROR):
        response = client.post("/subscribe", data="[" * 5000, content_type="application/json")
        hook = signed_post(client, "/webhooks/events", None, body=b"[" * 5000)
    assert response.status_code == 400
    assert hook.status_code == 400
    assert "Traceback" not in caplog.text and not caplog.records
    assert snapshot(db)["subscribers"] == []


def test_webhook_timestamp_with_non_ascii_digits_is_refused(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A superscript digit (a Latin-1 header byte) is not a timestamp: 401, not a 500.

    str.isdigit() accepts "²" but int() does not, so the unsigned request crashed the view.
    """
    with caplog.at_level(logging.ERROR):
        for value in ("t=\u00b2,v2=00", "t=1\u00b9,v2=00", "t=\u00b3\u00b2\u00b9,v2=00"):
            response = client.post("/webhooks/events", data=b"{}",
                                   content_type="application/json",
                                   headers={tokens.WEBHOOK_HEADER: value})
            assert response.status_code == 401
    assert not caplog.records


# --- redirects ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad_next", [
    f"{WEB_ORIGIN}/\r\nSet-Cookie: x=1",  # urlsplit drops CR/LF, the header would not
    f"{WEB_ORIGIN}/\tok",
    "https://evil.example\\@www.example.org/",  # backslash: urlsplit and browsers disagree
    f" {WEB_ORIGIN}/",
])
def test_next_that_parsers_read_differently_is_never_followed(
    client: FlaskClient, web_settings: Settings, bad_next: str
) -> None:
    """`next` is followed only if it is plainly on an allowed origin.

    urlsplit silently removes tabs and line breaks and treats a backslash as part of the
    user name, so these passed the origin check and then either crashed the redirect (500)
    or relied on Werkzeug's quoting to keep the browser on the right host.
    """
    response = subscribe(client, web_settings, "next@example.org", next=bad_next)
    assert response.status_code == 303
    assert response.headers["Location"] == "/subscribe/thanks"
    assert "Set-Cookie" not in response.headers
    # The form shown again (no time-trap token) does not carry it forward either.
    page = client.post("/subscribe", data={"email": "next@example.org", "next": bad_next})
    assert page.status_code == 200 and 'name="next"' not in page.get_data(as_text=True)


def test_plain_next_on_an_allowed_origin_still_works(
    client: FlaskClient, web_settings: Settings
) -> None:
    """The tightened check keeps the normal case: back to the publication's own page."""
    target = f"{WEB_ORIGIN}/newsletter/thanks?from=form"
    response = subscribe(client, web_settings, "plain@example.org", next=target)
    assert response.headers["Location"] == target


# --- logs -----------------------------------------------------------------------------------


def _access_lines(web_app: Flask, path_info: str, script_name: str = "") -> list[str]:
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Collect()
    logger = logging.getLogger("digest.access")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        web_app.test_client().get(
            "/", environ_overrides={"PATH_INFO": path_info, "SCRIPT_NAME": script_name}
        ).close()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return records


def test_access_log_never_holds_a_token_under_a_prefix_or_doubled_slash(
    web_app: Flask, web_settings: Settings, db: Database
) -> None:
    """Link tokens are redacted wherever they sit in the logged path.

    The redaction was anchored at the start of SCRIPT_NAME + PATH_INFO, so an app mounted
    under a prefix (/news/u/TOKEN) or a request for //u/TOKEN (which Werkzeug still serves)
    logged the bearer token in clear.
    """
    sub = add_active(db, "logged@example.org")
    token = path_of(tokens.unsubscribe_url(web_settings, sub)).rsplit("/", 1)[1]
    cases = [("/u/" + token, "/news"), ("//u/" + token, ""), ("/u//" + token, ""),
             ("/U/" + token, ""), ("/confirm/" + token, "/a/b")]
    for path_info, script_name in cases:
        lines = _access_lines(web_app, path_info, script_name)
        assert lines, path_info
        assert token not in lines[-1], (script_name, path_info, lines[-1])
        assert "[token]" in json.loads(lines[-1])["path"]


# --- keys -----------------------------------------------------------------------------------


def test_blank_signing_key_is_refused_at_startup(
    make_app: Callable[..., Flask], web_settings: Settings
) -> None:
    """An empty entry in secret_key (TOML `secret_key = ["new", ""]`) is a config error.

    Every listed key verifies, so a blank one let anyone sign unsubscribe, preferences and
    confirm links with the empty key and the public salt.
    """
    for keys in (("",), ("good-key-0123456789", ""), ("good-key-0123456789", "   ")):
        with pytest.raises(ConfigError, match="empty"):
            make_app(web_settings.replace(secret_key=keys))


def test_blank_webhook_secret_never_verifies(
    make_app: Callable[..., Flask], web_settings: Settings, db: Database
) -> None:
    """A signature made with an empty secret is refused even if a blank one is listed."""
    add_active(db, "victim@example.org")
    client = make_app(web_settings.replace(webhook_secrets=("whsec-real-0123456789", ""))
                      ).test_client()
    event = {"id": "forged-1", "type": "complained", "email": "victim@example.org"}
    assert signed_post(client, "/webhooks/events", event, secret="").status_code == 401
    only_blank = make_app(web_settings.replace(webhook_secrets=(" ",))).test_client()
    assert signed_post(only_blank, "/webhooks/events", event, secret=" ").status_code in (401, 404)
    assert snapshot(db)["suppressions"] == []


# --- data that reaches the operator ----------------------------------------------------------


def test_export_neutralises_a_formula_in_an_address_from_the_public_form(
    client: FlaskClient, web_settings: Settings, db: Database, outbox: list[OutgoingMessage]
) -> None:
    """A sign-up address that a spreadsheet would run as a formula is exported inert.

    "=", "+" and "-" are valid first characters of an email address, so anyone could put
    a formula into the operator's `subscribers export` CSV via the public form. The export
    quotes it like names already were, and an import of that file reads the address back.
    """
    address = "=cmd|'/Ccalc'!A0@example.org"
    assert subscribers.normalise(address).email == address
    assert subscribe(client, web_settings, address).status_code == 303
    out = io.StringIO()
    with db.read() as session:
        subscribers.export_csv(session, out)
    cells = [line.split(",", 1)[0] for line in out.getvalue().splitlines()[1:]]
    assert cells and not any(c.startswith(("=", "+", "-", "@")) for c in cells), cells
    parsed = subscribers.parse_csv(io.StringIO(out.getvalue()))
    assert list(parsed.rows) == [address.lower()]
    assert parsed.invalid == 0


def test_a_flood_of_free_form_sections_is_refused(
    make_app: Callable[..., Flask], web_settings: Settings, db: Database
) -> None:
    """With no sections configured, a 64 KB JSON list of names is a 400, not seconds of work.

    Working through such a list held the SQLite write lock (every sign-up's) for seconds.
    """
    names = [f"s{i}" for i in range(30_000)]
    with pytest.raises(InputError, match="too many sections"):
        subscribers.resolve_sections(names, ())
    allowed = names[: subscribers.MAX_SECTIONS - 10]
    assert subscribers.resolve_sections(allowed + allowed[:10], ()) == allowed
    free = web_settings.replace(sections=())
    client = make_app(free).test_client()
    before = snapshot(db)
    # 500 names fit under the 64 KB body limit, which stops larger floods with a 413.
    response = subscribe(client, free, "flood@example.org", json_body=True,
                         sections=names[:500])
    assert response.status_code == 400
    assert "too many sections" in response.get_json()["error"]
    assert snapshot(db)["subscribers"] == before["subscribers"]


def test_form_command_refuses_a_next_url_the_server_would_ignore(web_settings: Settings) -> None:
    """`digest form --next` applies the same rule as the server, so no snippet breaks quietly."""
    from digest.errors import InputError
    from digest.web import render_form_snippet

    with pytest.raises(InputError, match="not on an allowed origin"):
        render_form_snippet(web_settings, next_url=f"{WEB_ORIGIN}/a\tb")
    assert f'value="{WEB_ORIGIN}/thanks"' in render_form_snippet(
        web_settings, next_url=f"{WEB_ORIGIN}/thanks")
