"""Shared fixtures: real SQLite files in tmp_path, PostgreSQL when configured, a CLI runner.

Each area adds its fixtures in its own marked block below.
"""

from __future__ import annotations

import gc
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from digest.config import Settings
from digest.db import Database

POSTGRES_URL = os.environ.get("DIGEST_TEST_POSTGRES_URL", "")
# .ci/run sets this so that a missing PostgreSQL or browser fails the run instead of skipping.
REQUIRE_SERVICES = os.environ.get("DIGEST_REQUIRE_SERVICES") == "1"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def skip_or_fail(reason: str) -> None:
    """Skip a test that needs a missing service, or fail it when CI requires the service."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (DIGEST_REQUIRE_SERVICES=1)")
    pytest.skip(reason)

# --- core fixtures ---


def reset_postgres(url: str) -> None:
    """Drop everything in the test database so each test starts from an empty schema."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for an empty database, on SQLite and (when configured) PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'subscribers.db'}"
    if not POSTGRES_URL:
        skip_or_fail("set DIGEST_TEST_POSTGRES_URL to run the PostgreSQL variant")
    reset_postgres(POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture
def chromium_path() -> str:
    """Debian's chromium, for browser tests (Playwright's own download cannot work here)."""
    if not os.path.exists(CHROMIUM):
        skip_or_fail("Debian chromium is not installed: apt-get install chromium")
    return CHROMIUM


#: Flags for headless chromium on a machine with no network but loopback.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file URL in tmp_path, for behaviour that is about files and locking."""
    return f"sqlite:///{tmp_path / 'subscribers.db'}"


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A migrated database (SQLite file, and PostgreSQL when configured)."""
    database = Database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def settings(db_url: str) -> Settings:
    """Settings pointing at the test database, with a signing key and a postal address."""
    return Settings(
        database_url=db_url,
        secret_key=("test-secret-key-new", "test-secret-key-old"),
        postal_address="1 Example Street, Springfield",
        base_url="https://news.example.org",
        from_email="weekly@news.example.org",
        from_name="The Example Weekly",
    )


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CliRunner in an empty working folder with no DIGEST_* variables leaking in."""
    for key in list(os.environ):
        if key.startswith("DIGEST_") and key != "DIGEST_TEST_POSTGRES_URL":
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return CliRunner()


# --- end core fixtures ---


# --- render fixtures ---
# Sample issue content for rendering tests. All copy below is invented for these tests.

from datetime import UTC, datetime, timedelta  # noqa: E402

from digest.issues import ArticleView, IssueContent, SectionBlock  # noqa: E402

_SAMPLE_STORIES: dict[str, list[tuple[str, str, str, str, str]]] = {
    # section: [(title, author, dek, image alt, photo credit)]
    "Europe": [
        ("Harbour towns bet on ferries as rail strikes drag on", "Ines Calloway",
         "Three coastal councils pooled their budgets for a summer timetable that runs "
         "until the unions and the operator settle.",
         "A blue and white ferry leaving a stone harbour at dawn", "Maren Holt / Tidewater"),
        ("A border bridge reopens, and the queues move to the bakeries", "Tomasz Wierzba",
         "Commuters who spent two winters on a detour now save forty minutes a day. "
         "Shopkeepers on both banks are still working out what that means for them.",
         "Pedestrians crossing a steel bridge over a slow river", "Lena Frisk"),
        ("Why the coalition talks stalled over a single fishing quota", "Ines Calloway",
         "Negotiators agreed on pensions and housing within a week. Herring took a month.",
         "Fishing boats moored three deep along a quay", "Archive photo"),
        ("Night trains are back. The timetables are not", "Paul Aubertin",
         "Operators added sleeper routes faster than infrastructure managers could "
         "schedule the track slots they need.",
         "A sleeper carriage corridor with its lights dimmed", "Paul Aubertin"),
    ],
    "Latin America": [
        ("Andean growers trade coffee for cacao as the frost line climbs", "Rosa Quintero",
         "A cooperative of 400 families is replanting hillsides with seedlings from a "
         "university nursery, and hedging with a shared drying shed.",
         "Rows of young cacao plants on a terraced slope", "Diego Arancibia"),
        ("The port that wants to be a data hub", "Mateo Luján",
         "A new subsea cable lands next to the container cranes; the city is betting that "
         "servers follow ships.",
         "Container cranes beside a low concrete cable station", "Cooperativa Imagen"),
        ("Election officials test paper ballots against a flood of rumours", "Rosa Quintero",
         "Observers counted the same ballots twice in public and streamed both counts.",
         "Volunteers counting paper ballots at long tables", "Observer mission"),
        ("A river pilot's guide to the lowest water in decades", "Ana Beltrán",
         "Barges run half loaded, and the pilots who know the old channels are in demand.",
         "A barge grounded on a sandbar under a grey sky", "Ana Beltrán"),
    ],
    "Asia-Pacific": [
        ("Island states draft a shared plan for fishing patrols", "Kai Matagi",
         "Five governments will pool two patrol boats and a surveillance plane, and split "
         "the fines.",
         "A patrol boat crossing a turquoise lagoon", "Pacific Desk"),
        ("The chip plant that runs on a river, and the farmers downstream", "Hana Okabe",
         "Water permits were signed in a week. The irrigation co-op found out from the "
         "local paper.",
         "A factory beside a river with paddy fields beyond", "Hana Okabe"),
        ("Megacity buses go electric, one depot at a time", "Arjun Mehta",
         "Charging, not buses, sets the pace: each depot needs its own substation.",
         "Electric buses lined up at overhead chargers", "Transit Authority"),
        ("A regional trade pact, explained in five ports", "Lin Zhao",
         "What changes for the goods that actually move, from rice to solar panels.",
         "Stacks of shipping containers seen from above", "Lin Zhao"),
    ],
    "Military Industrial Complex": [
        ("Shell factories cannot hire fast enough", "Grace Whitfield",
         "Production lines reopened after thirty years; the machinists who knew them "
         "have retired.",
         "A row of lathes on a factory floor", "Grace Whitfield"),
        ("Who audits the audit? A procurement office under review", "Sam Okonkwo",
         "Three inspectors general, two overlapping mandates and one missing spreadsheet.",
         "Filing cabinets in a dim government office", "Staff photo"),
        ("The drone budget line that no one can find", "Grace Whitfield",
         "Money for small drones is split across eleven programmes, which makes the total "
         "hard to argue with.",
         "A small quadcopter on a workbench", "Defence Review"),
        ("Export licences, by the numbers", "Nadia Ferreira",
         "A year of approvals, denials and quiet withdrawals, sorted by destination.",
         "A chart printed on paper next to a pen", "Nadia Ferreira"),
    ],
}

_LONG_SUMMARY = (
    "Reporters spent a month with the people most affected, from the early shift at the "
    "depot to the council meeting that ran past midnight, and came back with more questions "
    "than the official statement answers. The story follows the money, the timetable and "
    "the paperwork, and sets out what would have to change for the plan to work as "
    "promised. It also looks at two places that tried something similar and what happened "
    "there. "
)

WINDOW_END = datetime(2025, 11, 21, 9, 0, tzinfo=UTC)


def make_article(
    article_id: int,
    section: str,
    index: int = 0,
    *,
    long_summary: bool = False,
    image_base: str = "https://img.news.example.org",
    **overrides: object,
) -> ArticleView:
    """One invented article from the sample pool (cycling with a numbered suffix)."""
    pool = _SAMPLE_STORIES.get(section) or _SAMPLE_STORIES["Europe"]
    title, author, dek, alt, credit = pool[index % len(pool)]
    if index >= len(pool):
        title = f"{title} (part {index // len(pool) + 1})"
    slug = f"{section.lower().replace(' ', '-')}-{index + 1}"
    fields: dict[str, object] = {
        "id": article_id,
        "title": title,
        "url": f"https://news.example.org/{slug}?ref=feed",
        "section": section,
        "published_at": WINDOW_END - timedelta(hours=article_id + 1),
        "author": author,
        "dek": "" if long_summary else dek,
        "summary": (_LONG_SUMMARY * 3) if long_summary else dek,
        "image_url": f"{image_base}/{slug}.jpg" if image_base else "",
        "image_alt": alt,
        "image_credit": credit,
    }
    fields.update(overrides)
    return ArticleView(**fields)  # type: ignore[arg-type]


def make_issue_content(
    sections: tuple[str, ...] = ("Europe", "Latin America", "Asia-Pacific",
                                 "Military Industrial Complex"),
    per_section: int = 3,
    more: int = 4,
    *,
    number: int = 47,
    long_summaries: bool = False,
    image_base: str = "https://img.news.example.org",
    intro: str = "",
    **overrides: object,
) -> IssueContent:
    """A realistic issue: per_section articles in each section and `more` extra stories."""
    next_id = 1
    blocks = []
    for name in sections:
        arts = []
        for i in range(per_section):
            arts.append(make_article(next_id, name, i, long_summary=long_summaries,
                                     image_base=image_base))
            next_id += 1
        blocks.append(SectionBlock(name=name, articles=tuple(arts)))
    extra = []
    for i in range(more):
        name = sections[i % len(sections)] if sections else "Europe"
        extra.append(make_article(next_id, name, per_section + i // max(len(sections), 1),
                                  long_summary=long_summaries, image_base=image_base))
        next_id += 1
    fields: dict[str, object] = {
        "number": number,
        "window_start": WINDOW_END - timedelta(days=7),
        "window_end": WINDOW_END,
        "label": "2025-W47",
        "sections": tuple(blocks),
        "more": tuple(extra),
        "intro": intro,
    }
    fields.update(overrides)
    return IssueContent(**fields)  # type: ignore[arg-type]


@pytest.fixture
def render_settings() -> Settings:
    """Settings for rendering tests: no database, a postal address, https base URL."""
    return Settings(
        newsletter_name="The Example Weekly",
        base_url="https://news.example.org",
        postal_address="1 Example Street\nSpringfield 12345",
        language="en",
    )


@pytest.fixture
def issue_content() -> IssueContent:
    """A four-section sample issue with an editor's note and four more stories."""
    return make_issue_content(
        intro="This week: **ferries, frost and fishing quotas**. "
        "Read [our methods note](https://news.example.org/methods) for how we pick stories."
    )


# --- end render fixtures ---


# --- smtp fixtures ---
# Imported here rather than at the top so this block stays self-contained.
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from tests.smtp_server import SMTPTestServer, make_self_signed_cert  # noqa: E402


@pytest.fixture
def smtp_server() -> Iterator[SMTPTestServer]:
    """A running SMTP test server on 127.0.0.1 (tests/smtp_server.py), stopped afterwards."""
    with SMTPTestServer() as server:
        yield server


@pytest.fixture
def smtp_server_factory() -> Iterator[Callable[..., SMTPTestServer]]:
    """Start SMTP test servers with options (auth=, tls=, certificate=); all stopped afterwards."""
    servers: list[SMTPTestServer] = []

    def start(**options: Any) -> SMTPTestServer:
        server = SMTPTestServer(**options)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def smtp_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed (certfile, keyfile) for 127.0.0.1 and localhost, made with openssl."""
    try:
        return make_self_signed_cert(tmp_path_factory.mktemp("tls"))
    except FileNotFoundError as exc:
        skip_or_fail(f"TLS tests need the openssl command: {exc}")
        raise


# --- end smtp fixtures ---


# --- article fixtures ---
# Sample feeds (all invented text) and a local HTTP server for URL imports.

import threading  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from http.server import (  # noqa: E402
    BaseHTTPRequestHandler,
    SimpleHTTPRequestHandler,
    ThreadingHTTPServer,
)

ARTICLE_FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def article_fixtures() -> Path:
    """The folder of sample feeds: feed.xml, atom.xml, articles.json/.jsonl/.csv, bad.*."""
    return ARTICLE_FIXTURES


class _FixtureHandler(SimpleHTTPRequestHandler):
    """Serves tests/fixtures, plus /slow (1 s of silence) and /to-file (a bad redirect)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, directory=str(ARTICLE_FIXTURES), **kwargs)

    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(1.0)  # longer than the client's timeout; then hang up
            return
        if self.path == "/to-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/hostname")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean


@contextmanager
def serve_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Run handler on an ephemeral loopback port; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def feed_server() -> Iterator[str]:
    """Base URL (http://127.0.0.1:PORT) of a local server for the fixture feeds."""
    with serve_http(_FixtureHandler) as url:
        yield url


# --- end article fixtures ---


# --- sending fixtures ---
# Seed data and subprocess helpers for the send engine's tests (test_send*.py, test_schedule.py).
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from datetime import timedelta as _timedelta  # noqa: E402

from sqlalchemy import insert  # noqa: E402

from digest.issues import Window, parse_week  # noqa: E402
from digest.models import Article  # noqa: E402
from digest.models import Subscriber as _Subscriber  # noqa: E402

SEND_WEEK = "2025-W47"
REPO_ROOT = Path(__file__).resolve().parent.parent


def send_window(settings: Settings, week: str = SEND_WEEK) -> Window:
    """The ISO week the sending tests send."""
    return parse_week(week, settings.tz)


def seed_articles(db: Database, window: Window, count: int = 6,
                  sections: tuple[str, ...] = ("World", "Tech")) -> None:
    """count articles inside window, spread over sections."""
    with db.write() as session:
        session.execute(insert(Article), [
            {"url": f"https://news.example.org/story-{window.label}-{i}",
             "title": f"Story {i} of {window.label}", "section": sections[i % len(sections)],
             "published_at": window.start + _timedelta(hours=i + 1),
             "dek": f"What happened in story {i}.", "summary": f"Summary of story {i}."}
            for i in range(count)
        ])


def seed_subscribers(db: Database, count: int, *, start: int = 0, domain: str = "example.com",
                     sections: list[str] | None = None, status: str = "active") -> list[str]:
    """count subscribers r<i>@domain in one bulk insert; returns their addresses."""
    emails = [f"r{i}@{domain}" for i in range(start, start + count)]
    if emails:
        with db.write() as session:
            session.execute(insert(_Subscriber), [
                {"email": e, "email_key": e, "name": f"Reader {i}", "status": status,
                 "sections": sections or []}
                for i, e in enumerate(emails, start)
            ])
    return emails


def smtp_settings(settings: Settings, server: SMTPTestServer, **changes: Any) -> Settings:
    """settings sending through the test server (plain SMTP on loopback)."""
    return settings.replace(backend="smtp", smtp_host=server.host, smtp_port=server.port,
                            smtp_security="none", smtp_timeout=10.0, **changes)


def digest_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a `python -m digest` subprocess mirroring settings (SMTP included)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update({
        "DIGEST_DATABASE_URL": settings.database_url,
        "DIGEST_SECRET_KEY": ",".join(settings.secret_key),
        "DIGEST_POSTAL_ADDRESS": settings.postal_address,
        "DIGEST_BASE_URL": settings.base_url,
        "DIGEST_FROM_EMAIL": settings.from_email,
        "DIGEST_BACKEND": settings.backend,
        "DIGEST_SMTP_HOST": settings.smtp_host,
        "DIGEST_SMTP_PORT": str(settings.smtp_port),
        "DIGEST_SMTP_SECURITY": settings.smtp_security,
        "DIGEST_SEND_LEASE_SECONDS": str(settings.send_lease_seconds),
        "DIGEST_SEND_RETRY_BASE": str(settings.send_retry_base),
        "PYTHONPATH": str(REPO_ROOT),
    })
    env.update(extra)
    return env


@pytest.fixture
def digest_process(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `python -m digest ARGS` subprocesses; every one is killed and reaped afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "digest", *args], env=env, cwd=tmp_path,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)


# --- end sending fixtures ---


# --- web fixtures ---
# The Flask app on the `db` fixture, with confirmations sent inline into the memory backend.
from flask import Flask  # noqa: E402
from flask.testing import FlaskClient  # noqa: E402

from digest.mail.base import OutgoingMessage  # noqa: E402
from digest.mail.memory import MemoryBackend  # noqa: E402

WEB_ORIGIN = "https://www.example.org"
WEBHOOK_SECRETS = ("whsec-new-0123456789", "whsec-old-9876543210")


@pytest.fixture
def web_settings(settings: Settings, tmp_path: Path) -> Settings:
    """Settings for the web app: memory mail backend, no time trap wait, two sections."""
    return settings.replace(
        backend="memory",
        file_dir=str(tmp_path / "outbox"),
        allowed_origins=(WEB_ORIGIN,),
        webhook_secrets=WEBHOOK_SECRETS,
        sections=("Science", "Arts"),
        subscribe_min_seconds=0.0,
        subscribe_ip_limit=1000,
        subscribe_email_limit=1000,
    )


@pytest.fixture
def outbox() -> Iterator[list[OutgoingMessage]]:
    """The memory backend's shared outbox, emptied before and after the test."""
    MemoryBackend.clear()
    yield MemoryBackend.outbox
    MemoryBackend.clear()


@pytest.fixture
def make_app(db: Database, outbox: list[OutgoingMessage]) -> Callable[..., Flask]:
    """Build the app for some settings on the test database (confirmations sent inline)."""

    def make(settings: Settings, **config: Any) -> Flask:
        test_config = {"TESTING": True, "DIGEST_DATABASE": db, "DIGEST_MAIL_BACKGROUND": False}
        test_config.update(config)
        return create_web_app(settings, test_config)

    return make


@pytest.fixture
def web_app(make_app: Callable[..., Flask], web_settings: Settings) -> Flask:
    """The web app with web_settings."""
    return make_app(web_settings)


@pytest.fixture
def client(web_app: Flask) -> FlaskClient:
    """A test client for web_app."""
    return web_app.test_client()


def create_web_app(settings: Settings, test_config: dict[str, Any]) -> Flask:
    """digest.web.create_app, imported late so collection works without the web module."""
    from digest.web import create_app

    return create_app(settings, test_config)


# --- end web fixtures ---


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test() -> Iterator[None]:
    """Collect garbage as each test ends, so a connection or socket a test leaves open
    warns (and fails) in that test, not in whichever later test the collector runs."""
    yield
    gc.collect()
