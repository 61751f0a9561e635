"""The sign-up policy (digest/signup.py) through POST /subscribe and the preferences form:
the origin rule as browsers send it, and a request path that does the same work for every
address, so neither the answer nor its timing tells members from new addresses."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, select

from digest import subscribers, tokens
from digest.config import Settings
from digest.db import Database
from digest.mail.base import OutgoingMessage
from digest.models import Subscriber
from digest.signup import origin_allowed
from tests.conftest import WEB_ORIGIN

OWN = "https://news.example.org"


def post(client: FlaskClient, settings: Settings, address: str,
         headers: dict[str, str]) -> Any:
    data = {"email": address, "form_token": tokens.form_token(settings, time.time() - 30)}
    return client.post("/subscribe", data=data, headers=headers,
                       environ_base={"REMOTE_ADDR": "192.0.2.10"})


def stored(db: Database) -> list[str]:
    with db.read() as session:
        return list(session.scalars(select(Subscriber.email_key)))


# --- the origin rule ---------------------------------------------------------------------


@pytest.mark.parametrize(("origin", "fetch_site", "allowed"), [
    (None, None, True),                     # curl, a server-side integration: no browser
    (OWN, None, True),                      # an older browser on our own page
    (WEB_ORIGIN, None, True),               # a listed partner site
    ("https://evil.example", None, False),
    ("null", None, False),                  # opaque origin, no fetch metadata to vouch
    ("null", "same-origin", True),          # our own page under a no-referrer policy
    (OWN, "same-origin", True),
    (WEB_ORIGIN, "cross-site", True),
    (WEB_ORIGIN, "same-site", True),
    ("https://evil.example", "cross-site", False),
    ("null", "cross-site", False),          # a sandboxed iframe, even one on our own site
    ("https://shop.news.example.org", "same-site", False),  # a sibling subdomain, not listed
    (None, "cross-site", False),
    (OWN, "none", False),                   # "none" is a typed navigation, never a post
])
def test_origin_rule(origin: str | None, fetch_site: str | None, allowed: bool) -> None:
    assert origin_allowed(origin, fetch_site, frozenset({OWN, WEB_ORIGIN})) is allowed


def test_pages_send_a_referrer_policy_that_keeps_the_origin_on_posts(
    client: FlaskClient,
) -> None:
    """With "no-referrer" Chromium posts our own form with "Origin: null" (issue 10)."""
    policy = client.get("/subscribe").headers["Referrer-Policy"]
    assert policy in ("strict-origin-when-cross-origin", "same-origin")


def test_own_page_post_with_null_origin_and_same_origin_fetch_site_is_accepted(
    client: FlaskClient, web_settings: Settings, db: Database
) -> None:
    response = post(client, web_settings, "own@example.org",
                    {"Origin": "null", "Sec-Fetch-Site": "same-origin"})
    assert response.status_code == 303
    assert stored(db) == ["own@example.org"]


def test_sandboxed_frame_and_unlisted_sites_are_refused(
    client: FlaskClient, web_settings: Settings, db: Database
) -> None:
    for headers in ({"Origin": "null", "Sec-Fetch-Site": "cross-site"},
                    {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
                    {"Origin": "null"}):
        response = post(client, web_settings, "victim@example.org", headers)
        assert response.status_code == 403, headers
    assert stored(db) == []
    listed = post(client, web_settings, "partner@example.org",
                  {"Origin": WEB_ORIGIN, "Sec-Fetch-Site": "cross-site"})
    assert listed.status_code == 303
    assert stored(db) == ["partner@example.org"]


def test_preferences_post_follows_the_origin_rule_for_our_own_pages(
    client: FlaskClient, web_settings: Settings, db: Database
) -> None:
    with db.write() as session:
        sub = subscribers.add(session, "pref@example.org", name="Old").subscriber
    link = tokens.preferences_url(web_settings, sub).replace(OWN, "")
    form = {"action": "save", "name": "Changed by another site", "sections": ["Arts"]}
    for headers in ({"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
                    {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
                    {"Origin": "https://evil.example"},
                    # a partner may embed the sign-up form, but not post anyone's preferences
                    {"Origin": WEB_ORIGIN, "Sec-Fetch-Site": "cross-site"}):
        assert client.post(link, data=form, headers=headers).status_code == 403, headers
        assert client.post(link, data={"action": "unsubscribe"},
                           headers=headers).status_code == 403, headers
    with db.read() as session:
        after = session.get(Subscriber, sub.id)
        assert after is not None and (after.name, after.status) == ("Old", "active")
    own = client.post(link, data=form, headers={"Origin": OWN, "Sec-Fetch-Site": "same-origin"})
    assert own.status_code == 200 and "preferences are saved" in own.get_data(as_text=True)


# --- the same work for every address -----------------------------------------------------


@contextmanager
def statements_on_this_thread(db: Database) -> Iterator[list[str]]:
    """The SQL this thread sends (the request path), not the mailer thread's."""
    seen: list[str] = []
    me = threading.get_ident()

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if threading.get_ident() == me:
            seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def test_request_path_is_the_same_for_new_and_known_addresses(
    make_app: Callable[..., Flask], web_settings: Settings, db: Database,
    outbox: list[OutgoingMessage],
) -> None:
    """New, active, pending, unsubscribed and suppressed addresses: the same statements in
    the request and the same answer; the row and the email come after the response."""
    app = make_app(web_settings, DIGEST_MAIL_BACKGROUND=True)
    mailer = app.extensions["digest"].mailer
    client = app.test_client()
    with db.write() as session:
        subscribers.add(session, "active@example.org")
        gone = subscribers.add(session, "gone@example.org").subscriber
        gone.status = "unsubscribed"
        subscribers.suppress(session, "bounced@example.org", "bounced")
    first = post(client, web_settings, "pending@example.org", {})
    first.close()
    assert mailer.join(10) and len(outbox) == 1

    runs: dict[str, tuple[list[str], int, bytes]] = {}
    for address in ("new@example.org", "active@example.org", "pending@example.org",
                    "gone@example.org", "bounced@example.org"):
        with statements_on_this_thread(db) as seen:
            response = post(client, web_settings, address, {"Origin": OWN})
            body = response.get_data()
            response.close()  # the server closes the response once it is written
        runs[address] = (seen, response.status_code, body)
        assert mailer.join(10)
    mailer.close()
    reference = runs["new@example.org"]
    assert reference[0], "the request path sent no SQL at all"
    assert not any("subscribers" in s for s in reference[0]), reference[0]
    for address, run in runs.items():
        assert run == reference, address
    # The work after the response did happen: a row and a confirmation for new and gone.
    assert sorted(m.recipient for m in outbox) == [
        "gone@example.org", "new@example.org", "pending@example.org"]
    assert "new@example.org" in stored(db)


def test_a_burst_of_sign_ups_is_recorded_together_after_the_responses(
    make_app: Callable[..., Flask], web_settings: Settings, db: Database,
    outbox: list[OutgoingMessage],
) -> None:
    """What piles up while the mailer waits is written in one transaction: every row and
    every email arrives, none twice, and the work cannot fall behind the requests."""
    app = make_app(web_settings, DIGEST_MAIL_BACKGROUND=True)
    mailer = app.extensions["digest"].mailer
    client = app.test_client()
    commits: list[int] = []

    def count(_conn: Any) -> None:
        commits.append(threading.get_ident())

    event.listen(db.engine, "commit", count)
    me = threading.get_ident()
    for i in range(30):
        post(client, web_settings, f"burst{i}@example.org", {}).close()
    assert mailer.join(10)
    mailer.close()
    event.remove(db.engine, "commit", count)
    assert sorted(stored(db)) == sorted(f"burst{i}@example.org" for i in range(30))
    assert sorted(m.recipient for m in outbox) == sorted(stored(db))
    # 30 request transactions; far fewer on the mailer thread (one per burst it found).
    assert commits.count(me) == 30
    assert 1 <= len(commits) - 30 < 30
