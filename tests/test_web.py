"""The public web app: every route, every defence, and what it stores and sends."""

from __future__ import annotations

import dataclasses
import email
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import TimestampSigner
from sqlalchemy import select, text
from werkzeug.test import TestResponse

from digest import subscribers, tokens
from digest.cli import main
from digest.config import Settings
from digest.db import Database
from digest.mail.base import OutgoingMessage
from digest.models import Article, Issue, IssueArticle, RateLimitHit, Subscriber, Suppression
from digest.web import client_key, origin_of, redact_path
from tests.conftest import WEB_ORIGIN, WEBHOOK_SECRETS

# --- helpers --------------------------------------------------------------------------------


def form_token(settings: Settings, age: float = 30.0) -> str:
    """A time-trap token issued `age` seconds ago."""
    return tokens.form_token(settings, time.time() - age)


def subscribe(client: FlaskClient, settings: Settings, address: str, *, json_body: bool = False,
              ip: str = "192.0.2.10", headers: dict[str, str] | None = None,
              **fields: Any) -> TestResponse:
    data: dict[str, Any] = {"email": address, "form_token": form_token(settings)}
    data.update(fields)
    kwargs: dict[str, Any] = {"environ_base": {"REMOTE_ADDR": ip}, "headers": headers or {}}
    if json_body:
        return client.post("/subscribe", json=data, **kwargs)
    return client.post("/subscribe", data=data, **kwargs)


def subscriber(db: Database, address: str) -> Subscriber | None:
    with db.read() as session:
        return session.scalar(select(Subscriber).where(Subscriber.email_key == address.lower()))


def snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables the web app writes."""
    tables = ("subscribers", "suppressions", "rate_limits", "webhook_events")
    with db.read() as session:
        return {
            t: [tuple(r) for r in session.execute(text(f"SELECT * FROM {t} ORDER BY 1"))]
            for t in tables
        }


def parsed(message: OutgoingMessage) -> EmailMessage:
    result = email.message_from_bytes(message.data, policy=default_policy)
    assert isinstance(result, EmailMessage)
    return result


def confirm_link(message: OutgoingMessage) -> str:
    body = parsed(message).get_body(("plain",))
    assert body is not None
    match = re.search(r"https://news\.example\.org(/confirm/\S+)", body.get_content())
    assert match, body.get_content()
    return match.group(1)


def add_active(db: Database, address: str, **kwargs: Any) -> Subscriber:
    with db.write() as session:
        return subscribers.add(session, address, **kwargs).subscriber


def path_of(url: str) -> str:
    return url.replace("https://news.example.org", "")


def signed_post(client: FlaskClient, path: str, payload: Any, *, secret: str = WEBHOOK_SECRETS[0],
                at: int | None = None, body: bytes | None = None) -> TestResponse:
    raw = body if body is not None else json.dumps(payload).encode()
    header = tokens.webhook_signature(secret, int(time.time()) if at is None else at, raw,
                                      path=path)
    return client.post(path, data=raw, content_type="application/json",
                       headers={tokens.WEBHOOK_HEADER: header})


@contextmanager
def unchanged(db: Database) -> Iterator[None]:
    before = snapshot(db)
    yield
    assert snapshot(db) == before


# --- basics ---------------------------------------------------------------------------------


def test_healthz(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}


def test_subscribe_page_is_accessible_html(client: FlaskClient) -> None:
    response = client.get("/subscribe")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert '<html lang="en">' in page
    assert '<label for="email">Email address</label>' in page
    assert 'name="website"' in page and 'tabindex="-1"' in page
    assert re.search(r'name="form_token" value="[^"]{20,}"', page)
    assert "http" not in re.sub(r'(action|href)="[^"]*"', "", page.split("<main>")[0]).replace(
        "http-equiv", "")  # no external assets
    assert client.get("/").status_code == 302


def test_security_headers(client: FlaskClient) -> None:
    response = client.get("/subscribe")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert "Set-Cookie" not in response.headers


# --- POST /subscribe --------------------------------------------------------------------


def test_form_post_creates_pending_and_sends_one_confirmation(
    client: FlaskClient, web_settings: Settings, db: Database, outbox: list[OutgoingMessage]
) -> None:
    response = subscribe(client, web_settings, "Ada@Example.org", name="Ada\x00 Lovelace",
                         sections=["science"])
    assert response.status_code == 303
    assert response.headers["Location"] == "/subscribe/thanks"
    sub = subscriber(db, "ada@example.org")
    assert sub is not None
    assert (sub.status, sub.name, sub.sections) == ("pending", "Ada Lovelace", ["Science"])
    assert sub.confirmation_sent_at is not None
    assert len(outbox) == 1
    message = parsed(outbox[0])
    assert message["To"] == "Ada@example.org"
    assert message["Subject"] == "Confirm your subscription to The Weekly Digest"
    assert message["Message-ID"] and message["Date"]
    assert outbox[0].data.count(b"\r\n") > 5  # CRLF line ends
    # The name from the public form never appears in the email.
    assert b"Lovelace" not in outbox[0].data
    html_part = message.get_body(("html",))
    assert html_part is not None and "/confirm/" in html_part.get_content()
    assert client.get("/subscribe/thanks").status_code == 200


def test_json_post_gets_202(
    client: FlaskClient, web_settings: Settings, db: Database, outbox: list[OutgoingMessage]
) -> None:
    response = subscribe(client, web_settings, "json@example.org", json_body=True,
                         sections=["Arts"])
    assert response.status_code == 202
    assert response.get_json()["status"] == "accepted"
    assert len(outbox) == 1


def test_same_answer_for_new_active_unsubscribed_pending_and_suppressed(
    client: FlaskClient, web_settings: Settings, db: Database
) -> None:
    add_active(db, "active@example.org")
    add_active(db, "left@example.org").status = "unsubscribed"
    with db.write() as session:
        sub = session.scalar(select(Subscriber).where(Subscriber.email_key == "left@example.org"))
        assert sub is not None
        sub.status = "unsubscribed"
        subscribers.erase(session, "erased@example.org")
    subscribe(client, web_settings, "pending@example.org")
    for as_json in (False, True):
        answers = set()
        for address in ("new@example.org" if not as_json else "new2@example.org",
                        "active@example.org", "left@example.org", "pending@example.org",
                        "erased@example.org"):
            r = subscribe(client, web_settings, address, json_body=as_json)
            headers = tuple(sorted((k, v) for k, v in r.headers.items() if k != "Date"))
            answers.add((r.status_code, headers, r.get_data()))
        assert len(answers) == 1, answers


def test_invalid_address_gets_400_form_with_the_reason(
    client: FlaskClient, web_settings: Settings, db: Database
) -> None:
    response = subscribe(client, web_settings, "ada@", name="<b>Ada</b>")
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "There must be something after the @-sign." in page
    assert 'aria-invalid="true"' in page
    assert "&lt;b&gt;Ada&lt;/b&gt;" in page and "<b>Ada" not in page
    response = subscribe(client, web_settings, "nope", json_body=True)
    assert response.status_code == 400 and "@-sign" in response.get_json()["error"]
    response = subscribe(client, web_settings, "ok@example.org", sections=["Sport"])
    assert response.status_code == 400
    assert "unknown section" in response.get_data(as_text=True)
    assert snapshot(db)["subscribers"] == []


def test_honeypot_and_too_fast_posts_look_normal_but_store_and_send_nothing(
    make_app: Callable[..., Flask], web_settings: Settings, db: Database,
    outbox: list[OutgoingMessage],
) -> None:
    client = make_app(web_settings.replace(subscribe_min_seconds=60.0)).test_client()
    normal = subscribe(client, web_settings, "slow@example.org")  # token is 30 s old: too fast
    bot = subscribe(client, web_settings, "bot@example.org", website="https://spam.example")
    fresh = client.post("/subscribe", data={"email": "quick@example.org",
                                            "form_token": tokens.form_token(web_settings)})
    for response in (normal, bot, fresh):
        assert response.status_code == 303
        assert response.headers["Location"] == "/subscribe/thanks"
    assert snapshot(db)["subscribers"] == []
    assert outbox == []


def test_post_without_time_trap_token_gets_our_form_back(
    client: FlaskClient, db: Database, outbox: list[OutgoingMessage]
) -> None:
    response = client.post("/subscribe", data={"email": "nojs@example.org"})
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Almost done" in page and 'value="nojs@example.org"' in page
    assert re.search(r'name="form_token" value="[^"]{20,}"', page)
    response = client.post("/subscribe", json={"email": "nojs@example.org"})
    assert response.status_code == 400 and "form_token" in response.get_json()["error"]
    assert snapshot(db)["subscribers"] == [] and outbox == []


def test_origin_check(client: FlaskClient, web_settings: Settings, db: Database) -> None:
    bad = subscribe(client, web_settings, "x@example.org",
                    headers={"Origin": "https://evil.example"})
    assert bad.status_code == 403
    assert "Access-Control-Allow-Origin" not in bad.headers
    assert subscribe(client, web_settings, "x@example.org",
                     headers={"Origin": "null"}).status_code == 403
    assert snapshot(db)["subscribers"] == []
    ok = subscribe(client, web_settings, "x@example.org", headers={"Origin": WEB_ORIGIN})
    assert ok.status_code == 303
    assert ok.headers["Access-Control-Allow-Origin"] == WEB_ORIGIN
    own = subscribe(client, web_settings, "y@example.org",
                    headers={"Origin": "https://news.example.org"})
    assert own.status_code == 303
    sub = subscriber(db, "x@example.org")
    assert sub is not None and sub.consent_source == f"web form on {WEB_ORIGIN}"


def test_cors_preflight_and_token_endpoint(client: FlaskClient, web_settings: Settings) -> None:
    pre = client.options("/subscribe", headers={"Origin": WEB_ORIGIN,
                                                "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 204
    assert pre.headers["Access-Control-Allow-Origin"] == WEB_ORIGIN
    evil_pre = client.options("/subscribe", headers={"Origin": "https://evil.example"})
    assert evil_pre.status_code == 403
    token = client.get("/subscribe/token", headers={"Origin": WEB_ORIGIN})
    assert token.headers["Access-Control-Allow-Origin"] == WEB_ORIGIN
    assert "Origin" in token.headers["Vary"]
    assert tokens.check_form_token(web_settings, token.get_json()["token"], time.time()) == "ok"
    evil = client.get("/subscribe/token", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in evil.headers
    assert token.headers["Cache-Control"] == "no-store"


def test_next_redirect_only_to_allowed_origins(
    client: FlaskClient, web_settings: Settings
) -> None:
    ok = subscribe(client, web_settings, "n1@example.org", next=f"{WEB_ORIGIN}/thanks")
    assert ok.headers["Location"] == f"{WEB_ORIGIN}/thanks"
    evil = subscribe(client, web_settings, "n2@example.org", next="https://evil.example/x")
    assert evil.headers["Location"] == "/subscribe/thanks"


def test_thousand_posts_for_one_address_send_one_email(
    client: FlaskClient, web_settings: Settings, db: Database, outbox: list[OutgoingMessage]
) -> None:
    """The 24-hour cap holds whatever the client IP (rate limits set high here)."""
    statuses = set()
    for i in range(1000):
        r = subscribe(client, web_settings, "target@example.org", ip=f"198.51.{i // 250}.{i % 250}")
        statuses.add(r.status_code)
    assert statuses == {303}
    assert len(outbox) == 1


def test_concurrent_posts_for_one_address_send_one_email(
    web_app: Flask, web_settings: Settings, db: Database, outbox: list[OutgoingMessage]
) -> None:
    """Threads racing on a new address (row locks on PostgreSQL, the write lock on SQLite)."""
    statuses: list[int] = []

    def worker(n: int) -> None:
        client = web_app.test_client()
        for i in range(15):
            r = subscribe(client, web_settings, "race@example.org", ip=f"198.51.100.{n * 16 + i}")
            statuses.append(r.status_code)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert statuses == [303] * 120
    assert len(outbox) == 1
    with db.read() as session:
        assert len(list(session.scalars(select(Subscriber)))) == 1


def test_rate_limits_per_ip_and_per_address(
    make_app: Callable[..., Flask], web_settings: Settings, outbox: list[OutgoingMessage]
) -> None:
    limited = web_settings.replace(subscribe_ip_limit=3, subscribe_email_limit=2)
    client = make_app(limited).test_client()
    codes = [subscribe(client, limited, f"ip{i}@example.org", ip="203.0.113.7").status_code
             for i in range(5)]
    assert codes == [303, 303, 303, 429, 429]
    codes = [subscribe(client, limited, "one@example.org", ip=f"203.0.113.{20 + i}").status_code
             for i in range(4)]
    assert codes == [303, 303, 429, 429]
    too_many = subscribe(client, limited, "one@example.org", ip="203.0.113.99", json_body=True)
    assert too_many.status_code == 429
    assert too_many.headers["Retry-After"] == "3600"


def test_rate_limits_live_in_the_database(
    make_app: Callable[..., Flask], web_settings: Settings, db: Database
) -> None:
    """A second app (another worker or a restart) sees the first one's counts."""
    limited = web_settings.replace(subscribe_ip_limit=2)
    first, second = make_app(limited).test_client(), make_app(limited).test_client()
    assert subscribe(first, limited, "a@example.org").status_code == 303
    assert subscribe(second, limited, "b@example.org").status_code == 303
    assert subscribe(first, limited, "c@example.org").status_code == 429
    with db.read() as session:
        assert session.scalar(select(RateLimitHit.count).where(
            RateLimitHit.key == "subscribe-ip:192.0.2.10")) == 3


def test_trusted_proxy_header(
    make_app: Callable[..., Flask], web_settings: Settings
) -> None:
    behind = web_settings.replace(trusted_proxies=1, subscribe_ip_limit=1)
    client = make_app(behind).test_client()
    for i in range(3):  # the same proxy address, three different clients
        r = subscribe(client, behind, f"p{i}@example.org", ip="10.0.0.1",
                      headers={"X-Forwarded-For": f"198.51.100.{i}"})
        assert r.status_code == 303
    r = subscribe(client, behind, "p9@example.org", ip="10.0.0.1",
                  headers={"X-Forwarded-For": "198.51.100.1"})
    assert r.status_code == 429


def test_failed_confirmation_send_is_logged_not_a_500(
    make_app: Callable[..., Flask], web_settings: Settings, db: Database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        def __enter__(self) -> Any:
            raise OSError("connection refused")

        def __exit__(self, *args: object) -> None:
            pass

    client = make_app(web_settings, DIGEST_MAIL_FACTORY=lambda settings: Broken()).test_client()
    with caplog.at_level(logging.INFO, logger="digest"):
        assert subscribe(client, web_settings, "f@example.org").status_code == 303
    assert "confirmation_failed" in caplog.text
    sub = subscriber(db, "f@example.org")
    assert sub is not None and sub.status == "pending"


def test_background_mailer_sends_after_the_response(
    make_app: Callable[..., Flask], web_settings: Settings, outbox: list[OutgoingMessage]
) -> None:
    app = make_app(web_settings, DIGEST_MAIL_BACKGROUND=True)
    mailer = app.extensions["digest"].mailer
    response = subscribe(app.test_client(), web_settings, "bg@example.org")
    assert response.status_code == 303
    assert mailer.join(10) and outbox == []  # nothing is queued before the response is out
    response.close()  # what the WSGI server does once it has written the response
    assert mailer.join(10)
    mailer.close()
    assert len(outbox) == 1


def test_shutdown_records_held_back_sign_ups_at_once(
    make_app: Callable[..., Flask], web_settings: Settings
) -> None:
    """Work held back after a response is not lost to SIGTERM: close() drains it now."""
    mailer = make_app(web_settings, DIGEST_MAIL_BACKGROUND=True).extensions["digest"].mailer
    done: list[str] = []

    def work() -> Any:
        done.append("recorded")
        return None

    mailer.submit(work, delay=4.0)  # longer than close() is given below
    mailer.close(timeout=2.0)
    assert done == ["recorded"]


# --- confirm, unsubscribe, preferences ---------------------------------------------------


def test_confirm_flow_and_get_head_change_nothing(
    client: FlaskClient, web_settings: Settings, db: Database, outbox: list[OutgoingMessage]
) -> None:
    subscribe(client, web_settings, "c@example.org")
    link = confirm_link(outbox[0])
    with unchanged(db):
        page = client.get(link)
        assert page.status_code == 200
        assert '<form method="post">' in page.get_data(as_text=True)
        assert page.headers["X-Robots-Tag"] == "noindex"
        assert client.head(link).status_code == 200
    done = client.post(link)
    assert done.status_code == 200
    assert "You are subscribed" in done.get_data(as_text=True)
    sub = subscriber(db, "c@example.org")
    assert sub is not None and sub.status == "active"
    assert sub.confirmed_at is not None and sub.consent_at is not None
    assert sub.consent_source == "web form"
    assert client.post(link).status_code == 200  # confirming twice is fine


def test_tampered_and_wrong_purpose_tokens_get_400(
    client: FlaskClient, web_settings: Settings, db: Database
) -> None:
    sub = add_active(db, "t@example.org")
    for purpose, path in (("confirm", "/confirm/"), ("unsubscribe", "/u/"),
                          ("preferences", "/preferences/")):
        token = tokens.make_token(web_settings, purpose, sub.id, sub.email_key)  # type: ignore[arg-type]
        changed = token[:-1] + ("A" if token[-1] != "A" else "B")
        for method in (client.get, client.post):
            response = method(path + changed)
            assert response.status_code == 400
            assert "This link does not work" in response.get_data(as_text=True)
    unsubscribe_token = tokens.make_token(web_settings, "unsubscribe", sub.id, sub.email_key)
    assert client.post("/preferences/" + unsubscribe_token).status_code == 400
    assert client.post("/confirm/" + unsubscribe_token).status_code == 400
    assert subscriber(db, "t@example.org").status == "active"  # type: ignore[union-attr]


def test_expired_confirm_link_gets_400(
    client: FlaskClient, web_settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    with db.write() as session:
        sub = subscribers.add(session, "late@example.org", pending=True).subscriber
    long_ago = int(time.time()) - web_settings.confirm_max_age - 10
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: long_ago)
    link = path_of(tokens.confirm_url(web_settings, sub))
    monkeypatch.undo()
    response = client.post(link)
    assert response.status_code == 400
    assert "This link has expired" in response.get_data(as_text=True)
    assert subscriber(db, "late@example.org").status == "pending"  # type: ignore[union-attr]


def test_rotated_keys_in_the_web_app(
    make_app: Callable[..., Flask], web_settings: Settings, db: Database
) -> None:
    sub = add_active(db, "rot@example.org")
    old_settings = web_settings.replace(secret_key=("only-the-old-key",))
    old_link = path_of(tokens.unsubscribe_url(old_settings, sub))
    rotated = make_app(web_settings.replace(secret_key=("brand-new-key-0001", "only-the-old-key")))
    new_only = make_app(web_settings.replace(secret_key=("brand-new-key-0001",)))
    assert new_only.test_client().get(old_link).status_code == 400
    assert rotated.test_client().get(old_link).status_code == 200


def test_one_click_unsubscribe_rfc8058(
    client: FlaskClient, web_settings: Settings, db: Database
) -> None:
    sub = add_active(db, "oc@example.org")
    link = path_of(tokens.unsubscribe_url(web_settings, sub))
    with unchanged(db):
        assert client.get(link).status_code == 200
        assert client.head(link).status_code == 200
    for _ in range(2):  # idempotent
        response = client.post(link, data="List-Unsubscribe=One-Click",
                               content_type="application/x-www-form-urlencoded")
        assert response.status_code == 200
        assert "Location" not in response.headers and "Set-Cookie" not in response.headers
    after = subscriber(db, "oc@example.org")
    assert after is not None and after.status == "unsubscribed" and after.unsubscribed_at


def test_unsubscribe_button_without_cookies(
    client: FlaskClient, web_settings: Settings, db: Database
) -> None:
    sub = add_active(db, "btn@example.org")
    response = client.post(path_of(tokens.unsubscribe_url(web_settings, sub)))
    assert response.status_code == 200
    assert "You are unsubscribed" in response.get_data(as_text=True)
    assert subscriber(db, "btn@example.org").status == "unsubscribed"  # type: ignore[union-attr]


def test_unsubscribe_link_of_a_removed_subscriber_is_harmless(
    client: FlaskClient, web_settings: Settings, db: Database
) -> None:
    gone = add_active(db, "gone@example.org")
    link = path_of(tokens.unsubscribe_url(web_settings, gone))
    with db.write() as session:
        subscribers.remove(session, "gone@example.org")
    add_active(db, "next.person@example.org")  # may even reuse the id on some databases
    assert client.post(link).status_code == 200
    assert subscriber(db, "next.person@example.org").status == "active"  # type: ignore[union-attr]


def test_preferences(client: FlaskClient, web_settings: Settings, db: Database) -> None:
    sub = add_active(db, "pref@example.org", name="Old Name")
    link = path_of(tokens.preferences_url(web_settings, sub))
    with unchanged(db):
        page = client.get(link).get_data(as_text=True)
        assert 'value="Old Name"' in page and 'value="Science"' in page
    saved = client.post(link, data={"action": "save", "name": "New\r\nName",
                                    "sections": ["Arts"]})
    assert saved.status_code == 200 and "preferences are saved" in saved.get_data(as_text=True)
    after = subscriber(db, "pref@example.org")
    assert after is not None and (after.name, after.sections) == ("New Name", ["Arts"])
    bad = client.post(link, data={"action": "save", "name": "x", "sections": ["Sport"]})
    assert bad.status_code == 400 and "unknown section" in bad.get_data(as_text=True)
    out = client.post(link, data={"action": "unsubscribe"})
    assert out.status_code == 200
    assert subscriber(db, "pref@example.org").status == "unsubscribed"  # type: ignore[union-attr]
    assert "not subscribed" in client.get(link).get_data(as_text=True)


def test_preferences_heading_reads_well_for_a_name_starting_with_the(
    make_app: Callable[..., Flask], web_settings: Settings, db: Database
) -> None:
    """Not "Your The Audit Dispatch preferences" (issue 10)."""
    named = web_settings.replace(newsletter_name="The Audit Dispatch")
    sub = add_active(db, "heading@example.org")
    page = make_app(named).test_client().get(path_of(tokens.preferences_url(named, sub)))
    heading = re.search(r"<h1>(.*?)</h1>", page.get_data(as_text=True))
    assert heading is not None
    assert heading.group(1) == "Your preferences for The Audit Dispatch"


def test_pages_take_their_colours_and_fonts_from_the_theme_settings(
    make_app: Callable[..., Flask], web_settings: Settings
) -> None:
    themed = web_settings.replace(theme_text="#112233", theme_dark_background="#000000",
                                  theme_body_font="Verdana, 'DejaVu Sans', sans-serif")
    page = make_app(themed).test_client().get("/subscribe").get_data(as_text=True)
    light, dark = page.split("@media (prefers-color-scheme: dark)")
    assert "--digest-text: #112233;" in light
    assert "--digest-body-font: Verdana, 'DejaVu Sans', sans-serif;" in light
    assert "--digest-background: #000000;" in dark.split("}")[0]
    # A Settings built without validation cannot break out of the style block.
    unchecked = dataclasses.replace(web_settings, theme_text="red}</style><script>x()</script>")
    page = make_app(unchecked).test_client().get("/subscribe").get_data(as_text=True)
    assert "<script>x()" not in page and "--digest-text: #1f2328;" in page


# --- archive ------------------------------------------------------------------------------


def make_issue(db: Database, status: str = "sent", number: int = 1,
               label: str = "2025-W47") -> None:
    end = datetime(2025, 11, 24, tzinfo=UTC) + timedelta(days=7 * (number - 1))
    with db.write() as session:
        article = Article(url=f"https://news.example.org/harbour-{number}",
                          title="Harbour ferries keep the coast moving", section="Science",
                          dek="Councils pooled their budgets for a summer timetable.",
                          published_at=end - timedelta(days=2))
        issue = Issue(number=number, label=label, window_start=end - timedelta(days=7),
                      window_end=end, status=status, subject=f"Issue {number}: ferries")
        session.add_all([article, issue])
        session.flush()
        session.add(IssueArticle(issue_id=issue.id, article_id=article.id, position=0,
                                 section="Science"))


def test_archive_lists_and_shows_sent_issues_without_personal_data(
    client: FlaskClient, db: Database
) -> None:
    add_active(db, "private.reader@example.org", name="Private Reader")
    make_issue(db)
    make_issue(db, status="sending", number=2, label="2025-W48")
    index = client.get("/archive").get_data(as_text=True)
    assert "/archive/2025-W47" in index and "2025-W48" not in index
    response = client.get("/archive/2025-W47")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Harbour ferries keep the coast moving" in page
    assert "private.reader" not in page and "Private Reader" not in page
    assert "/u/" not in page and "/preferences/" not in page
    assert "img-src https:" in response.headers["Content-Security-Policy"]
    assert client.get("/archive/2025-W48").status_code == 404
    assert client.get("/archive/2099-W01").status_code == 404
    assert client.get("/archive/2025-W47").get_data(as_text=True) == page  # cached


# --- webhooks -----------------------------------------------------------------------------


def test_webhook_subscribe(
    client: FlaskClient, db: Database, outbox: list[OutgoingMessage]
) -> None:
    payload = {"id": "evt-1", "email": "hook@example.org", "name": "Hook", "sections": ["Arts"]}
    response = signed_post(client, "/webhooks/subscribe", payload)
    assert response.status_code == 202
    sub = subscriber(db, "hook@example.org")
    assert sub is not None and (sub.status, sub.consent_source) == ("pending", "webhook")
    assert len(outbox) == 1
    replay = signed_post(client, "/webhooks/subscribe", payload)
    assert (replay.status_code, replay.get_json()["status"]) == (200, "duplicate")
    # The old secret still works while it is listed (rotation).
    other = {"id": "evt-2", "email": "hook2@example.org"}
    assert signed_post(client, "/webhooks/subscribe", other,
                       secret=WEBHOOK_SECRETS[1]).status_code == 202
    assert len(outbox) == 2


def test_webhook_signature_is_bound_to_its_endpoint(
    client: FlaskClient, db: Database, outbox: list[OutgoingMessage]
) -> None:
    """A body signed for /webhooks/events, replayed to /webhooks/subscribe, is refused."""
    body = json.dumps({"id": "evt-9", "type": "unsubscribed",
                       "email": "replayed@example.org"}).encode()
    header = tokens.webhook_signature(WEBHOOK_SECRETS[0], int(time.time()), body,
                                      path="/webhooks/events")
    with unchanged(db):
        replayed = client.post("/webhooks/subscribe", data=body,
                               content_type="application/json",
                               headers={tokens.WEBHOOK_HEADER: header})
        assert replayed.status_code == 401
        assert "does not match" in replayed.get_json()["error"]
    assert outbox == []
    ok = client.post("/webhooks/events", data=body, content_type="application/json",
                     headers={tokens.WEBHOOK_HEADER: header})
    assert ok.status_code == 200


def test_webhook_rejects_bad_old_future_and_unsigned(client: FlaskClient, db: Database) -> None:
    payload = {"id": "evt-9", "email": "bad@example.org"}
    assert signed_post(client, "/webhooks/subscribe", payload,
                       secret="wrong-secret").status_code == 401
    assert signed_post(client, "/webhooks/subscribe", payload,
                       at=int(time.time()) - 301).status_code == 401
    assert signed_post(client, "/webhooks/subscribe", payload,
                       at=int(time.time()) + 301).status_code == 401
    assert client.post("/webhooks/subscribe", json=payload).status_code == 401
    tampered = client.post(
        "/webhooks/subscribe", data=json.dumps({**payload, "email": "evil@example.org"}),
        content_type="application/json",
        headers={tokens.WEBHOOK_HEADER: tokens.webhook_signature(
            WEBHOOK_SECRETS[0], int(time.time()), json.dumps(payload).encode(),
            path="/webhooks/subscribe")},
    )
    assert tampered.status_code == 401
    assert signed_post(client, "/webhooks/subscribe", {"email": "x@example.org"}).status_code == 400
    assert signed_post(client, "/webhooks/subscribe", None, body=b"not json").status_code == 400
    assert snapshot(db)["subscribers"] == [] and snapshot(db)["webhook_events"] == []


def test_webhooks_off_without_secrets(
    make_app: Callable[..., Flask], web_settings: Settings
) -> None:
    client = make_app(web_settings.replace(webhook_secrets=())).test_client()
    assert signed_post(client, "/webhooks/events", {"id": "1"}).status_code == 404


def test_events_endpoint_suppresses(client: FlaskClient, db: Database) -> None:
    add_active(db, "bounce@example.org")
    add_active(db, "spam@example.org")
    add_active(db, "fine@example.org")
    events = [
        {"id": "e1", "type": "bounced", "email": "Bounce@example.org"},
        {"id": "e2", "type": "complaint", "email": "spam@example.org"},
        {"id": "e3", "type": "deferred", "email": "fine@example.org"},
        {"id": "e4", "type": "bounce", "email": "not an address"},
    ]
    response = signed_post(client, "/webhooks/events", events)
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "suppressed": 2, "unsubscribed": 0,
                                   "ignored": 1, "duplicate": 0, "invalid": 1}
    assert subscriber(db, "bounce@example.org").status == "bounced"  # type: ignore[union-attr]
    assert subscriber(db, "spam@example.org").status == "complained"  # type: ignore[union-attr]
    assert subscriber(db, "fine@example.org").status == "active"  # type: ignore[union-attr]
    again = signed_post(client, "/webhooks/events", events[0])
    assert again.get_json()["duplicate"] == 1
    with db.read() as session:
        assert len(list(session.scalars(select(Suppression)))) == 2
    assert signed_post(client, "/webhooks/events", [{"id": "x"}]).status_code == 400


def test_events_then_form_cannot_resubscribe(
    client: FlaskClient, web_settings: Settings, db: Database, outbox: list[OutgoingMessage]
) -> None:
    signed_post(client, "/webhooks/events", {"id": "c1", "type": "complained",
                                             "email": "never@example.org"})
    assert subscribe(client, web_settings, "never@example.org").status_code == 303
    assert outbox == [] and subscriber(db, "never@example.org") is None


# --- logging, helpers, CLI ----------------------------------------------------------------


def test_access_log_is_json_and_redacts_tokens(
    client: FlaskClient, web_settings: Settings, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    sub = add_active(db, "log@example.org")
    token_path = path_of(tokens.unsubscribe_url(web_settings, sub))
    with caplog.at_level(logging.INFO, logger="digest.access"):
        # The line is written when the server closes the response (the body is sent).
        client.get(token_path, environ_base={"REMOTE_ADDR": "192.0.2.44"}).close()
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "digest.access"]
    assert lines[-1]["path"] == "/u/[token]"
    assert lines[-1]["method"] == "GET" and lines[-1]["status"] == 200
    assert lines[-1]["remote_addr"] == "192.0.2.44"
    assert isinstance(lines[-1]["duration_ms"], float)
    assert token_path.split("/")[-1] not in caplog.text


def test_helpers() -> None:
    assert redact_path("/confirm/abc.def/x") == "/confirm/[token]/x"
    assert redact_path("/preferences/abc") == "/preferences/[token]"
    assert origin_of("HTTPS://WWW.Example.org:443/path") == "https://www.example.org"
    assert origin_of("http://127.0.0.1:8001/") == "http://127.0.0.1:8001"
    assert origin_of("null") == "" and origin_of("javascript:alert(1)") == ""
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff") == "2001:db8::/64"
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"


def test_missing_secret_key_fails_at_startup(settings: Settings, db: Database) -> None:
    from digest.errors import ConfigError
    from digest.web import create_app

    with pytest.raises(ConfigError, match="DIGEST_SECRET_KEY"):
        create_app(settings.replace(secret_key=()), {"DIGEST_DATABASE": db})


def test_form_command_prints_the_snippet(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIGEST_BASE_URL", "https://news.example.org")
    monkeypatch.setenv("DIGEST_ALLOWED_ORIGINS", WEB_ORIGIN)
    monkeypatch.setenv("DIGEST_SECTIONS", "Science,Arts")
    result = runner.invoke(main, ["form", "--next", f"{WEB_ORIGIN}/thanks"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert 'action="https://news.example.org/subscribe"' in out
    assert 'data-token-url="https://news.example.org/subscribe/token"' in out
    assert 'name="website"' in out and 'name="form_token"' in out
    assert f'name="next" value="{WEB_ORIGIN}/thanks"' in out
    assert 'value="Science"' in out
    bad = runner.invoke(main, ["form", "--next", "https://evil.example/"])
    assert bad.exit_code == 1 and "not on an allowed origin" in bad.output
