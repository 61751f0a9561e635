"""The pipelined SMTP path (RFC 2920) against real servers on loopback.

Refusals of single recipients in the middle of a pipeline, a 421 with a disconnect and lost
replies end each message exactly as command-and-reply does (the same server without
PIPELINING), with nothing lost and nothing delivered twice. A server that demands AUTH while
no credentials are set stops `digest send` with a configuration error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from digest.cli import main
from digest.config import Settings
from digest.db import Database
from digest.mail import Outcome, SendResult
from digest.mail.smtp import SMTPBackend
from digest.models import Delivery
from tests.conftest import seed_articles, seed_subscribers, send_window
from tests.smtp_server import SMTPTestServer
from tests.test_mail_backends import make_messages

COUNT = 30
# Recipients in the middle of the batch and the reply each gets at RCPT TO.
REFUSALS = {
    "reader10@example.com": ("550 5.1.1 No such user", Outcome.BOUNCED),
    "reader11@example.com": ("450 4.2.1 Mailbox busy", Outcome.DEFERRED),
    "reader12@example.com": ("452 4.5.3 Too many recipients", Outcome.DEFERRED),
    # RFC 5321 §4.5.3.1.10: 552 at RCPT means "too many recipients", so temporary.
    "reader13@example.com": ("552 5.2.2 Mailbox full", Outcome.DEFERRED),
    "reader14@example.com": ("550 5.7.1 Relaying denied", Outcome.REJECTED),
}

Script = Callable[[SMTPTestServer], None]


def send(pipelining: bool, script: Script, connections: int) -> tuple[
    list[tuple[str, Outcome, int | None, str]], SMTPTestServer
]:
    """Send COUNT messages through a fresh server set up by script; (results, server)."""
    server = SMTPTestServer(pipelining=pipelining).start()
    try:
        script(server)
        backend = SMTPBackend(host=server.host, port=server.port, security="none",
                              connections=connections, timeout=5.0)
        with backend:
            results = backend.send_messages(make_messages(COUNT))
    finally:
        server.stop()
    return [summary(result) for result in results], server


def summary(result: SendResult) -> tuple[str, Outcome, int | None, str]:
    # Queue ids count transactions, which differ between the two paths; the rest may not.
    text = "queued" if result.text.startswith("2.0.0 OK: queued as") else result.text
    return result.message_id, result.outcome, result.code, text


def assert_delivered_once(results: list[tuple[str, Outcome, int | None, str]],
                          server: SMTPTestServer) -> None:
    """The server holds every SENT message exactly once and nothing else."""
    received = Counter(server.message_ids)
    assert set(received.values()) <= {1}, f"delivered twice: {received.most_common(3)}"
    assert sorted(received) == sorted(mid for mid, outcome, _, _ in results
                                      if outcome is Outcome.SENT)


def refuse(server: SMTPTestServer) -> None:
    for address, (reply, _) in REFUSALS.items():
        server.reply_to_rcpt(address, reply)


@pytest.mark.parametrize("connections", [1, 3])
def test_refused_recipients_mid_pipeline_end_as_in_command_and_reply(connections: int) -> None:
    """550, 450, 452 and 552 to single recipients mid-pipeline: each message gets its own
    outcome, code and text, the rest go through, on the connections they started on."""
    pipelined, server = send(True, refuse, connections)
    lockstep, plain_server = send(False, refuse, connections)
    assert server.pipelined > 0 and plain_server.pipelined == 0
    assert pipelined == lockstep
    by_id = {mid: (outcome, code, text) for mid, outcome, code, text in pipelined}
    for number, (address, (reply, outcome)) in enumerate(REFUSALS.items(), start=10):
        assert address == f"reader{number}@example.com"
        code, text = reply.split(" ", 1)
        assert by_id[f"msg-{number}@digest.test"] == (outcome, int(code), text)
    assert sum(outcome is Outcome.SENT for _, outcome, _, _ in pipelined) == COUNT - len(REFUSALS)
    assert_delivered_once(pipelined, server)
    assert server.connections == connections


@pytest.mark.parametrize("transaction", [1, 7, 16])
def test_421_and_disconnect_mid_pipeline_lose_nothing_and_send_nothing_twice(
    transaction: int,
) -> None:
    """A 421 at MAIL FROM closes the connection; the refused message and any envelope
    pipelined behind it are sent again on a new connection, once."""

    def script(server: SMTPTestServer) -> None:
        refuse(server)
        server.disconnect_at(transaction)

    pipelined, server = send(True, script, 2)
    lockstep, _ = send(False, script, 2)
    assert pipelined == lockstep
    assert_delivered_once(pipelined, server)
    assert sum(outcome is Outcome.SENT for _, outcome, _, _ in pipelined) == COUNT - len(REFUSALS)
    assert server.connections == 3


@pytest.mark.parametrize(("fault", "resent"), [
    ({"reply": "421 4.3.2 Shutting down"}, True),  # a refusal: safe to send again
    ({"reply": "451 4.3.0 Queue full"}, False),  # temporary: the caller retries later
    ({"reply": "552 5.3.4 Message too big"}, False),  # after DATA 552 is permanent
])
def test_replies_after_the_final_dot_mid_pipeline(fault: dict[str, Any], resent: bool) -> None:
    """The reply to message 12's final dot decides its fate alone; the next envelope, already
    pipelined behind the body, is unaffected (or re-sent after a 421)."""

    def script(server: SMTPTestServer) -> None:
        server.fail_at(12, "end-of-data", **fault)

    pipelined, server = send(True, script, 1)
    lockstep, _ = send(False, script, 1)
    assert pipelined == lockstep
    assert_delivered_once(pipelined, server)
    outcome = pipelined[11][1]
    assert outcome is (Outcome.SENT if resent else
                       Outcome.from_smtp_code(int(fault["reply"][:3])))
    assert [o for _, o, _, _ in pipelined].count(Outcome.SENT) == COUNT - (not resent)


def test_connection_reset_after_the_final_dot_is_not_resent() -> None:
    """The server took message 12 but the reply never came: it may be delivered, so it is
    DEFERRED and not resent here; the envelope pipelined behind it is resent."""

    def script(server: SMTPTestServer) -> None:
        server.fail_at(12, "end-of-data", reset=True)

    pipelined, server = send(True, script, 1)
    lockstep, _ = send(False, script, 1)
    assert pipelined == lockstep
    mid, outcome, code, text = pipelined[11]
    assert (outcome, code) == (Outcome.DEFERRED, None)
    assert text.startswith("connection lost after the message was sent")
    assert Counter(server.message_ids)[mid] == 1
    assert sorted(set(server.message_ids)) == sorted(m for m, _, _, _ in pipelined)
    assert len(server.message_ids) == COUNT


# -- AUTH required but not configured --------------------------------------------------------


@pytest.fixture
def auth_server(smtp_server_factory: Callable[..., SMTPTestServer]) -> SMTPTestServer:
    return smtp_server_factory(auth=("ann", "right"))


def test_send_to_a_server_that_requires_auth_without_credentials_stops_at_once(
    runner: CliRunner, settings: Settings, db: Database, auth_server: SMTPTestServer
) -> None:
    """530 5.7.0 and no username set: exit 1 with what to set, nobody marked failed or
    retried later; with the credentials set the same command sends everyone."""
    seed_articles(db, send_window(settings), 2)
    seed_subscribers(db, 40)
    env = {
        "DIGEST_DATABASE_URL": settings.database_url,
        "DIGEST_SECRET_KEY": ",".join(settings.secret_key),
        "DIGEST_POSTAL_ADDRESS": settings.postal_address,
        "DIGEST_BASE_URL": settings.base_url,
        "DIGEST_FROM_EMAIL": settings.from_email,
        "DIGEST_BACKEND": "smtp",
        "DIGEST_SMTP_HOST": auth_server.host,
        "DIGEST_SMTP_PORT": str(auth_server.port),
        "DIGEST_SMTP_SECURITY": "none",
    }
    week = ["send", "--week", "2025-W47", "--ignore-check"]
    result = runner.invoke(main, week, env=env)
    assert result.exit_code == 1, result.output
    assert "requires authentication (530 5.7.0 Authentication required)" in result.stderr
    assert "set DIGEST_SMTP_USERNAME and DIGEST_SMTP_PASSWORD" in result.stderr
    assert "Traceback" not in result.output
    assert auth_server.messages == []
    assert auth_server.transactions <= 2  # stopped at the first refusal, not one per reader
    with db.read() as session:
        statuses = Counter(session.scalars(select(Delivery.status)))
    # Unsent, and free to go at once: nothing failed, nothing scheduled for a later retry.
    assert set(statuses) <= {"pending", "inflight"} and sum(statuses.values()) == 40

    env |= {"DIGEST_SMTP_USERNAME": "ann", "DIGEST_SMTP_PASSWORD": "right"}
    result = runner.invoke(main, week, env=env)
    assert result.exit_code == 0, result.output
    assert len(set(auth_server.message_ids)) == len(auth_server.message_ids) == 40
