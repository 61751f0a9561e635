"""Mail backends: one contract every backend keeps, then each backend's own behaviour.

The SMTP tests run against a real aiosmtpd server on 127.0.0.1 (tests/smtp_server.py).
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from digest.config import Settings
from digest.errors import ConfigError
from digest.mail import (
    BackendConfigError,
    BaseBackend,
    Outcome,
    OutgoingMessage,
    SendResult,
    backend_class,
    backend_names,
    get_backend,
)
from digest.mail import file as file_module
from digest.mail.console import SEPARATOR, ConsoleBackend
from digest.mail.file import FileBackend, eml_filename
from digest.mail.memory import MemoryBackend
from digest.mail.smtp import SMTPBackend
from tests.smtp_server import SMTPTestServer, client_ssl_context

# A body that exercises SMTP transparency (lines that start with a dot, a lone dot),
# 8-bit UTF-8 text and a long line.
BODY = "Hello,\r\n.leading dot\r\n..two dots\r\n.\r\nGrüße aus Köln\r\n" + "x" * 900 + "\r\n"


def make_message(number: int, *, prefix: str = "msg", recipient: str = "") -> OutgoingMessage:
    """A complete RFC 5322 message with CRLF line ends and a unique Message-ID."""
    message_id = f"{prefix}-{number}@digest.test"
    recipient = recipient or f"reader{number}@example.com"
    data = (
        f"Message-ID: <{message_id}>\r\n"
        "From: The Weekly Digest <digest@example.com>\r\n"
        f"To: {recipient}\r\n"
        f"Subject: Issue {number}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n" + BODY
    ).encode()
    return OutgoingMessage(message_id, "bounces@example.com", recipient, data)


def make_messages(count: int, *, prefix: str = "msg") -> list[OutgoingMessage]:
    """``count`` distinct messages."""
    return [make_message(number, prefix=prefix) for number in range(count)]


def assert_all_sent(messages: Sequence[OutgoingMessage], results: Sequence[SendResult]) -> None:
    """One SENT result per message, in the order given."""
    assert [(r.message_id, r.recipient) for r in results] == [
        (m.message_id, m.recipient) for m in messages
    ]
    assert [r.outcome for r in results] == [Outcome.SENT] * len(messages)


def free_port() -> int:
    """A local port that nothing listens on (the OS just handed it out)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RecordingBackend(BaseBackend):
    """A third-party style backend, loaded by ``module:Class`` and by entry point in tests."""

    name = "recording"

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Report every message SENT."""
        return [SendResult.for_message(m, Outcome.SENT) for m in messages]


# -- the contract --------------------------------------------------------------------------


@dataclass
class Harness:
    """How a contract test makes a backend and sees what it delivered."""

    make: Callable[[], BaseBackend]
    delivered: Callable[[], list[bytes]]


class BackendContract:
    """Behaviour every built-in backend promises; subclasses provide the ``harness`` fixture."""

    def test_batch_gets_one_sent_result_per_message_in_order(self, harness: Harness) -> None:
        """A batch comes back as one SENT result per message, in the order given."""
        messages = make_messages(12)
        with harness.make() as backend:
            results = backend.send_messages(messages)
        assert_all_sent(messages, results)

    def test_delivers_exactly_the_bytes_given(self, harness: Harness) -> None:
        """What arrives is byte for byte what was handed over (dots, 8-bit text, CRLF)."""
        messages = make_messages(5)
        with harness.make() as backend:
            backend.send_messages(messages)
        assert sorted(harness.delivered()) == sorted(m.data for m in messages)

    def test_context_manager_opens_and_closes(self, harness: Harness) -> None:
        """``with backend`` calls open() on entry, close() on exit and returns the backend."""
        backend = harness.make()
        with (
            mock.patch.object(backend, "open", wraps=backend.open) as opened,
            mock.patch.object(backend, "close", wraps=backend.close) as closed,
        ):
            with backend as entered:
                assert entered is backend
                assert opened.call_count == 1
                assert closed.call_count == 0
                entered.send_messages(make_messages(1))
            assert closed.call_count == 1

    def test_close_is_safe_twice_and_before_open(self, harness: Harness) -> None:
        """close() may be called before open() and more than once."""
        backend = harness.make()
        backend.close()
        backend.open()
        backend.close()
        backend.close()

    def test_empty_batch_returns_no_results(self, harness: Harness) -> None:
        """An empty batch is fine and delivers nothing."""
        with harness.make() as backend:
            assert backend.send_messages([]) == []
        assert harness.delivered() == []

    def test_sends_without_explicit_open(self, harness: Harness) -> None:
        """send_messages works on a backend nobody opened (it opens and closes itself)."""
        messages = make_messages(3)
        backend = harness.make()
        assert_all_sent(messages, backend.send_messages(messages))
        backend.close()

    def test_can_be_opened_again_after_close(self, harness: Harness) -> None:
        """A closed backend can be opened again and keeps working."""
        backend = harness.make()
        with backend:
            backend.send_messages(make_messages(2, prefix="first"))
        with backend:
            backend.send_messages(make_messages(2, prefix="second"))
        assert len(harness.delivered()) == 4

    def test_concurrent_batches_from_threads_all_arrive(self, harness: Harness) -> None:
        """One backend shared by several threads delivers every message once."""
        batches = [make_messages(10, prefix=f"thread{t}") for t in range(4)]
        results: dict[int, list[SendResult]] = {}
        with harness.make() as backend:

            def send(index: int) -> None:
                results[index] = backend.send_messages(batches[index])

            threads = [threading.Thread(target=send, args=(i,)) for i in range(len(batches))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
        for index, batch in enumerate(batches):
            assert_all_sent(batch, results[index])
        assert sorted(harness.delivered()) == sorted(m.data for b in batches for m in b)


# -- console ------------------------------------------------------------------------------


def parse_console(output: str) -> list[tuple[str, bytes]]:
    """Split console output back into (envelope line, message bytes)."""
    chunks = output.split(SEPARATOR + "\n")
    assert chunks[-1] == ""
    parsed = []
    for chunk in chunks[:-1]:
        envelope, _, data = chunk.partition("\n")
        parsed.append((envelope, data.encode()))
    return parsed


class TestConsoleBackend(BackendContract):
    """The console backend writes readable messages to a stream."""

    @pytest.fixture
    def harness(self) -> Harness:
        stream = io.StringIO()
        return Harness(
            make=lambda: ConsoleBackend(stream=stream),
            delivered=lambda: [data for _, data in parse_console(stream.getvalue())],
        )

    def test_writes_to_stdout_by_default(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Without a stream the messages go to stdout, each with its envelope."""
        message = make_message(1)
        ConsoleBackend().send_messages([message])
        [(envelope, data)] = parse_console(capsys.readouterr().out)
        assert envelope == "MAIL FROM:<bounces@example.com> RCPT TO:<reader1@example.com>"
        assert data == message.data

    def test_messages_from_many_threads_never_interleave(self) -> None:
        """Concurrent writers each produce whole, separate messages."""
        stream = io.StringIO()
        backend = ConsoleBackend(stream=stream)
        batches = [make_messages(20, prefix=f"t{t}") for t in range(6)]
        threads = [threading.Thread(target=backend.send_messages, args=(b,)) for b in batches]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        written = [data for _, data in parse_console(stream.getvalue())]
        assert sorted(written) == sorted(m.data for b in batches for m in b)


# -- file ---------------------------------------------------------------------------------


class TestFileBackend(BackendContract):
    """The file backend writes one .eml per message, named after its Message-ID."""

    @pytest.fixture
    def harness(self, tmp_path: Path) -> Harness:
        outbox = tmp_path / "outbox"
        return Harness(
            make=lambda: FileBackend(file_dir=outbox),
            delivered=lambda: [p.read_bytes() for p in sorted(outbox.glob("*.eml"))],
        )

    def test_file_is_named_after_the_message_id(self, tmp_path: Path) -> None:
        """A plain Message-ID becomes the file name as it is, and the result says where."""
        message = make_message(7)
        [result] = FileBackend(file_dir=tmp_path).send_messages([message])
        path = tmp_path / "msg-7@digest.test.eml"
        assert path.read_bytes() == message.data
        assert result.text == f"written to {path}"

    @pytest.mark.parametrize(
        "message_id",
        ["../../etc/passwd", "a/b@x", "a\\b@x", "..hidden@x", ".", "", "with space@x",
         "c:colon@x", "x" * 400 + "@x", "ünïcode@x"],
    )
    def test_unsafe_message_ids_become_safe_names_inside_the_folder(
        self, tmp_path: Path, message_id: str
    ) -> None:
        """No separators, no leading dot, a bounded length, and the file stays in the folder."""
        name = eml_filename(message_id)
        assert "/" not in name and "\\" not in name and ":" not in name
        assert not name.startswith(".")
        assert name.endswith(".eml") and len(name) <= 200
        message = OutgoingMessage(message_id, "a@example.com", "b@example.com", b"X: y\r\n\r\n")
        [result] = FileBackend(file_dir=tmp_path).send_messages([message])
        assert result.outcome is Outcome.SENT
        assert [p.name for p in tmp_path.iterdir()] == [name]

    def test_different_message_ids_never_share_a_file(self) -> None:
        """IDs that differ only in unsafe characters still get different names."""
        ids = ["a/b@x", "a_b@x", "a\\b@x", "a:b@x", "a b@x", "_a_b@x", ".a_b@x"]
        assert len({eml_filename(i) for i in ids}) == len(ids)

    def test_same_message_id_replaces_its_file(self, tmp_path: Path) -> None:
        """Retrying a message (same Message-ID) replaces the file instead of adding one."""
        backend = FileBackend(file_dir=tmp_path)
        first = make_message(1)
        retry = OutgoingMessage(first.message_id, first.sender, first.recipient, b"New: 1\r\n\r\n")
        backend.send_messages([first])
        backend.send_messages([retry])
        assert [p.read_bytes() for p in tmp_path.iterdir()] == [retry.data]

    def test_missing_folder_is_created(self, tmp_path: Path) -> None:
        """open() creates the folder and its parents."""
        outbox = tmp_path / "a" / "b" / "outbox"
        with FileBackend(file_dir=outbox):
            assert outbox.is_dir()

    def test_folder_that_cannot_be_created_is_a_config_error(self, tmp_path: Path) -> None:
        """A file_dir that is a file fails open() with a message naming the setting."""
        blocker = tmp_path / "outbox"
        blocker.write_text("not a folder")
        with pytest.raises(BackendConfigError, match="DIGEST_FILE_DIR") as info:
            FileBackend(file_dir=blocker).open()
        assert str(blocker) in str(info.value)

    def test_file_appears_only_complete(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each message is written in full to a temporary file, then renamed into place."""
        real_replace = os.replace
        renames: list[tuple[Path, Path]] = []

        def checked_replace(source: str, target: Path) -> None:
            source_path = Path(source)
            assert source_path.parent == tmp_path and source_path.name.startswith(".")
            assert not Path(target).exists()
            assert source_path.read_bytes() == message.data
            renames.append((source_path, Path(target)))
            real_replace(source, target)

        monkeypatch.setattr(file_module.os, "replace", checked_replace)
        message = make_message(3)
        FileBackend(file_dir=tmp_path).send_messages([message])
        assert len(renames) == 1
        assert [p.name for p in tmp_path.iterdir()] == ["msg-3@digest.test.eml"]

    def test_failed_write_is_temporary_and_leaves_nothing(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A write that fails (disk full) is TEMPORARY and leaves no file, not even a temp."""

        def disk_full(fd: int) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(file_module.os, "fsync", disk_full)
        messages = make_messages(2)
        results = FileBackend(file_dir=tmp_path).send_messages(messages)
        assert [r.outcome for r in results] == [Outcome.TEMPORARY] * 2
        assert "No space left on device" in results[0].text
        assert list(tmp_path.iterdir()) == []

    def test_default_folder_is_outbox_in_the_working_folder(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With default settings, messages land in ./outbox."""
        monkeypatch.chdir(tmp_path)
        with get_backend(Settings(backend="file")) as backend:
            backend.send_messages([make_message(1)])
        assert (tmp_path / "outbox" / "msg-1@digest.test.eml").is_file()


# -- memory -------------------------------------------------------------------------------


@pytest.fixture
def empty_outbox() -> Iterator[None]:
    """The shared memory outbox, empty before and after the test."""
    MemoryBackend.clear()
    yield
    MemoryBackend.clear()


@pytest.mark.usefixtures("empty_outbox")
class TestMemoryBackend(BackendContract):
    """The memory backend keeps messages in a list shared by all instances."""

    @pytest.fixture
    def harness(self) -> Harness:
        return Harness(
            make=MemoryBackend, delivered=lambda: [m.data for m in MemoryBackend.outbox]
        )

    def test_outbox_is_shared_by_the_class_and_every_instance(self) -> None:
        """Two instances append to the one list that the class and each instance expose."""
        first, second = MemoryBackend(), MemoryBackend()
        first.send_messages([make_message(1)])
        second.send_messages([make_message(2)])
        assert first.outbox is second.outbox is MemoryBackend.outbox
        assert [m.message_id for m in MemoryBackend.outbox] == [
            "msg-1@digest.test", "msg-2@digest.test",
        ]

    def test_clear_empties_the_outbox_in_place(self) -> None:
        """clear() keeps the same list object, so earlier references see it empty."""
        outbox = MemoryBackend.outbox
        MemoryBackend().send_messages([make_message(1)])
        MemoryBackend.clear()
        assert outbox == [] and MemoryBackend.outbox is outbox

    def test_scripted_replies_are_classified_and_not_kept(self) -> None:
        """A scripted reply per recipient gives that outcome; refused mail is not kept."""
        backend = MemoryBackend(
            replies={"reader1@example.com": (550, "no such user"),
                     "reader2@example.com": (452, "mailbox full")}
        )
        results = backend.send_messages(make_messages(3))
        assert [(r.outcome, r.code, r.text) for r in results] == [
            (Outcome.SENT, 250, "OK"),
            (Outcome.BOUNCED, 550, "no such user"),
            (Outcome.DEFERRED, 452, "mailbox full"),
        ]
        assert [m.recipient for m in MemoryBackend.outbox] == ["reader0@example.com"]


# -- smtp ---------------------------------------------------------------------------------


def smtp_backend(server: SMTPTestServer, **options: Any) -> SMTPBackend:
    """An SMTP backend for the test server: plain text, two connections, short timeouts."""
    settings: dict[str, Any] = {
        "host": server.host, "port": server.port, "security": "none",
        "connections": 2, "timeout": 5.0, "local_hostname": "mailer.digest.test",
    }
    settings.update(options)
    return SMTPBackend(**settings)


def sent_ids(results: Sequence[SendResult]) -> list[str]:
    """The Message-IDs of the SENT results."""
    return [r.message_id for r in results if r.outcome is Outcome.SENT]


class TestSMTPBackend(BackendContract):
    """The SMTP backend against a real aiosmtpd server on 127.0.0.1, once with PIPELINING
    advertised (envelopes pipelined) and once without (command and reply)."""

    @pytest.fixture(params=[True, False], ids=["pipelining", "lockstep"])
    def pipelining(self, request: pytest.FixtureRequest) -> bool:
        return bool(request.param)

    @pytest.fixture
    def smtp_server(self, pipelining: bool) -> Iterator[SMTPTestServer]:
        with SMTPTestServer(pipelining=pipelining) as server:
            yield server

    @pytest.fixture
    def smtp_server_factory(self, pipelining: bool) -> Iterator[Callable[..., SMTPTestServer]]:
        servers: list[SMTPTestServer] = []

        def start(**options: Any) -> SMTPTestServer:
            server = SMTPTestServer(pipelining=pipelining, **options)
            servers.append(server)
            return server.start()

        yield start
        for server in servers:
            server.stop()

    @pytest.fixture
    def harness(self, smtp_server: SMTPTestServer) -> Harness:
        return Harness(
            make=lambda: smtp_backend(smtp_server),
            delivered=lambda: [m.data for m in smtp_server.messages],
        )

    def test_envelope_and_ehlo_name_reach_the_server(self, smtp_server: SMTPTestServer) -> None:
        """MAIL FROM, RCPT TO and the configured EHLO name are what the server sees."""
        with smtp_backend(smtp_server, connections=1) as backend:
            backend.send_messages([make_message(1)])
        [received] = smtp_server.messages
        assert received.mail_from == "bounces@example.com"
        assert received.rcpt_tos == ("reader1@example.com",)
        assert received.message_id == "msg-1@digest.test"
        assert smtp_server.ehlo_names == ["mailer.digest.test"]

    def test_sent_result_carries_the_servers_reply(self, smtp_server: SMTPTestServer) -> None:
        """A SENT result has the 250 reply to DATA, queue id included."""
        with smtp_backend(smtp_server) as backend:
            [result] = backend.send_messages([make_message(1)])
        assert (result.code, result.text) == (250, "2.0.0 OK: queued as 1")

    def test_pool_connections_are_reused_and_shared_out(self, smtp_server: SMTPTestServer) -> None:
        """Two batches over a pool of two use exactly two connections, both carrying mail."""
        with smtp_backend(smtp_server, connections=2) as backend:
            backend.send_messages(make_messages(100, prefix="a"))
            backend.send_messages(make_messages(100, prefix="b"))
        assert smtp_server.connections == 2
        assert {m.connection for m in smtp_server.messages} == {1, 2}

    def test_non_ascii_recipient_is_sent_with_smtputf8(self, smtp_server: SMTPTestServer) -> None:
        """An internationalised address goes out with SMTPUTF8 (RFC 6531)."""
        message = make_message(1, recipient="jörg@exämple.com")
        with smtp_backend(smtp_server) as backend:
            [result] = backend.send_messages([message])
        assert result.outcome is Outcome.SENT
        assert smtp_server.messages[0].rcpt_tos == ("jörg@exämple.com",)

    # -- classification

    @pytest.mark.parametrize(
        ("reply", "outcome"),
        [
            ("550 5.1.1 No such user", Outcome.BOUNCED),
            ("550 5.7.1 Relaying denied", Outcome.REJECTED),
            ("450 4.2.1 Mailbox busy", Outcome.TEMPORARY),
            ("452 4.5.3 Too many recipients", Outcome.TEMPORARY),
            # RFC 5321 §4.5.3.1.10: 552 at RCPT means 452.
            ("552 5.2.2 Mailbox full", Outcome.TEMPORARY),
        ],
    )
    def test_rcpt_replies_are_classified_with_code_and_text(
        self, smtp_server: SMTPTestServer, reply: str, outcome: Outcome
    ) -> None:
        """A refused recipient gets its outcome, code and text; the rest of the batch goes."""
        smtp_server.reply_to_rcpt("reader1@example.com", reply)
        messages = make_messages(3)
        with smtp_backend(smtp_server, connections=1) as backend:
            results = backend.send_messages(messages)
        code, text = reply.split(" ", 1)
        assert (results[1].outcome, results[1].code, results[1].text) == (outcome, int(code), text)
        assert results[1].message_id == "msg-1@digest.test"
        assert sent_ids(results) == ["msg-0@digest.test", "msg-2@digest.test"]
        assert smtp_server.connections == 1

    @pytest.mark.parametrize(
        ("stage", "reply", "outcome"),
        [
            ("mail", "553 5.7.1 Sender not allowed", Outcome.PERMANENT),
            ("mail", "451 4.3.0 Try later", Outcome.TEMPORARY),
            ("data", "554 5.7.1 No DATA now", Outcome.PERMANENT),
            ("end-of-data", "552 5.3.4 Message too big", Outcome.PERMANENT),
            ("end-of-data", "451 4.3.0 Queue full", Outcome.TEMPORARY),
        ],
    )
    def test_mail_and_data_replies_are_classified(
        self, smtp_server: SMTPTestServer, stage: Any, reply: str, outcome: Outcome
    ) -> None:
        """Refusals at MAIL FROM, DATA and after the message keep the connection usable."""
        smtp_server.fail_at(2, stage, reply=reply)
        with smtp_backend(smtp_server, connections=1) as backend:
            results = backend.send_messages(make_messages(3))
        assert (results[1].outcome, results[1].code) == (outcome, int(reply[:3]))
        assert sent_ids(results) == ["msg-0@digest.test", "msg-2@digest.test"]
        assert smtp_server.message_ids == ["msg-0@digest.test", "msg-2@digest.test"]
        assert smtp_server.connections == 1

    # -- lost connections

    def test_421_at_message_100_of_200_reconnects_without_loss_or_duplicates(
        self, smtp_server: SMTPTestServer
    ) -> None:
        """After a 421 and hang-up the pool reconnects; every message has one result, and
        the server gets no message twice (the refused one is retried, so all are SENT)."""
        smtp_server.disconnect_at(100)
        messages = make_messages(200)
        with smtp_backend(smtp_server, connections=2) as backend:
            results = backend.send_messages(messages)
        assert [r.message_id for r in results] == [m.message_id for m in messages]
        assert {r.outcome for r in results} <= {Outcome.SENT, Outcome.TEMPORARY}
        received = smtp_server.message_ids
        assert len(received) == len(set(received))
        assert sorted(received) == sorted(sent_ids(results))
        assert len(received) == 200
        assert smtp_server.connections == 3

    def test_421_after_data_is_retried_once_on_a_new_connection(
        self, smtp_server: SMTPTestServer
    ) -> None:
        """A 421 reply to the message is a clear refusal, so it is safe to send again."""
        smtp_server.fail_at(1, "end-of-data", reply="421 4.3.2 Shutting down")
        with smtp_backend(smtp_server, connections=1) as backend:
            [result] = backend.send_messages([make_message(1)])
        assert result.outcome is Outcome.SENT
        assert smtp_server.message_ids == ["msg-1@digest.test"]
        assert smtp_server.connections == 2

    def test_connection_dropped_before_data_is_retried_once(
        self, smtp_server: SMTPTestServer
    ) -> None:
        """A reset at MAIL FROM cannot have delivered anything, so the message is resent."""
        smtp_server.fail_at(2, "mail", reset=True)
        messages = make_messages(3)
        with smtp_backend(smtp_server, connections=1) as backend:
            results = backend.send_messages(messages)
        assert_all_sent(messages, results)
        assert sorted(smtp_server.message_ids) == sorted(m.message_id for m in messages)

    def test_reset_during_data_is_temporary_with_the_same_message_id(
        self, smtp_server: SMTPTestServer
    ) -> None:
        """A reset mid-DATA is TEMPORARY for that message only; it is not resent here."""
        smtp_server.reset_during_data_at(2)
        messages = make_messages(3)
        with smtp_backend(smtp_server, connections=1) as backend:
            results = backend.send_messages(messages)
        assert results[1].message_id == "msg-1@digest.test"
        assert results[1].outcome is Outcome.TEMPORARY
        assert results[1].code is None and "connection lost" in results[1].text
        assert sent_ids(results) == ["msg-0@digest.test", "msg-2@digest.test"]
        assert smtp_server.message_ids == ["msg-0@digest.test", "msg-2@digest.test"]

    def test_lost_reply_after_delivery_is_temporary_and_not_duplicated(
        self, smtp_server: SMTPTestServer
    ) -> None:
        """If the server took the message but the reply never came, it is not resent."""
        smtp_server.fail_at(1, "end-of-data", reset=True)
        with smtp_backend(smtp_server, connections=1) as backend:
            [result] = backend.send_messages([make_message(1)])
        assert result.outcome is Outcome.TEMPORARY
        assert "after the message was sent" in result.text
        assert smtp_server.message_ids == ["msg-1@digest.test"]

    def test_reply_timeout_is_temporary_and_quick(self, smtp_server: SMTPTestServer) -> None:
        """A server that stops answering makes the message TEMPORARY after the timeout."""
        smtp_server.fail_at(1, "end-of-data", delay=10)
        started = time.monotonic()
        with smtp_backend(smtp_server, connections=1, timeout=0.5) as backend:
            [result] = backend.send_messages([make_message(1)])
        assert time.monotonic() - started < 5
        assert result.outcome is Outcome.TEMPORARY
        assert "timed out" in result.text

    def test_server_gone_makes_the_rest_of_the_batch_temporary_quickly(
        self, smtp_server_factory: Callable[..., SMTPTestServer]
    ) -> None:
        """When the server goes away mid-run, every message is reported TEMPORARY at once."""
        server = smtp_server_factory()
        messages = make_messages(20)
        backend = smtp_backend(server)
        backend.open()
        server.stop()
        started = time.monotonic()
        results = backend.send_messages(messages)
        backend.close()
        assert time.monotonic() - started < 5
        assert [r.message_id for r in results] == [m.message_id for m in messages]
        assert {r.outcome for r in results} == {Outcome.TEMPORARY}
        assert "could not connect" in results[-1].text

    # -- opening

    def test_wrong_password_fails_open_quickly_with_a_clear_message(
        self, smtp_server_factory: Callable[..., SMTPTestServer]
    ) -> None:
        """A rejected login raises BackendConfigError naming the user and the settings."""
        server = smtp_server_factory(auth=("ann", "right"))
        started = time.monotonic()
        with pytest.raises(BackendConfigError) as info:
            smtp_backend(server, username="ann", password="wrong").open()
        assert time.monotonic() - started < 5
        message = str(info.value)
        assert message.startswith("authentication failed for user 'ann'")
        assert "535" in message
        assert message.endswith("check DIGEST_SMTP_USERNAME/DIGEST_SMTP_PASSWORD")

    def test_right_password_logs_in(
        self, smtp_server_factory: Callable[..., SMTPTestServer]
    ) -> None:
        """With the right credentials the messages go out as that user."""
        server = smtp_server_factory(auth=("ann", "right"))
        with smtp_backend(server, username="ann", password="right") as backend:
            results = backend.send_messages(make_messages(3))
        assert {r.outcome for r in results} == {Outcome.SENT}
        assert {m.auth_user for m in server.messages} == {"ann"}

    def test_missing_credentials_stop_the_send_with_a_configuration_error(
        self, smtp_server_factory: Callable[..., SMTPTestServer]
    ) -> None:
        """530 "authentication required" with no username set is our configuration: the batch
        stops at once with an error naming the settings, and no subscriber is given up."""
        server = smtp_server_factory(auth=("ann", "right"))
        started = time.monotonic()
        with smtp_backend(server) as backend, pytest.raises(BackendConfigError) as info:
            backend.send_messages(make_messages(50))
        assert time.monotonic() - started < 5
        assert "requires authentication (530 5.7.0" in str(info.value)
        assert "DIGEST_SMTP_USERNAME and DIGEST_SMTP_PASSWORD" in str(info.value)
        assert server.messages == []
        assert server.transactions <= 2  # one per connection, not one per message

    def test_wrong_port_fails_open_quickly_with_a_clear_message(self) -> None:
        """Nothing listening: BackendConfigError says what could not be reached and why."""
        port = free_port()
        started = time.monotonic()
        with pytest.raises(BackendConfigError) as info:
            SMTPBackend(host="127.0.0.1", port=port, security="none").open()
        assert time.monotonic() - started < 5
        assert str(info.value) == (
            f"could not connect to 127.0.0.1:{port}: Connection refused"
            " — check DIGEST_SMTP_HOST/DIGEST_SMTP_PORT"
        )

    def test_starttls_required_but_not_offered_fails_open(
        self, smtp_server: SMTPTestServer
    ) -> None:
        """security=starttls against a server without it is a config error, not plain text."""
        with pytest.raises(BackendConfigError, match="does not offer STARTTLS"):
            smtp_backend(smtp_server, security="starttls").open()

    # -- TLS

    def test_starttls_with_a_trusted_certificate(
        self,
        smtp_server_factory: Callable[..., SMTPTestServer],
        smtp_certificate: tuple[Path, Path],
    ) -> None:
        """STARTTLS, then AUTH, then the messages, verified against the test CA."""
        server = smtp_server_factory(
            tls="starttls", certificate=smtp_certificate, auth=("ann", "right")
        )
        backend = smtp_backend(
            server, security="starttls", username="ann", password="right",
            ssl_context=client_ssl_context(smtp_certificate[0]),
        )
        messages = make_messages(4)
        with backend:
            assert_all_sent(messages, backend.send_messages(messages))
        assert sorted(m.data for m in server.messages) == sorted(m.data for m in messages)

    def test_implicit_tls(
        self,
        smtp_server_factory: Callable[..., SMTPTestServer],
        smtp_certificate: tuple[Path, Path],
    ) -> None:
        """security=ssl speaks TLS from the first byte (port 465 style)."""
        server = smtp_server_factory(tls="ssl", certificate=smtp_certificate)
        backend = smtp_backend(
            server, security="ssl", ssl_context=client_ssl_context(smtp_certificate[0])
        )
        messages = make_messages(4)
        with backend:
            assert_all_sent(messages, backend.send_messages(messages))

    def test_untrusted_certificate_fails_open_with_a_clear_message(
        self,
        smtp_server_factory: Callable[..., SMTPTestServer],
        smtp_certificate: tuple[Path, Path],
    ) -> None:
        """The default context verifies certificates, so a self-signed one is refused."""
        server = smtp_server_factory(tls="starttls", certificate=smtp_certificate)
        with pytest.raises(BackendConfigError, match="could not be verified"):
            smtp_backend(server, security="starttls").open()

    def test_verify_false_accepts_a_self_signed_certificate(
        self,
        smtp_server_factory: Callable[..., SMTPTestServer],
        smtp_certificate: tuple[Path, Path],
    ) -> None:
        """verify=False is the escape hatch for test servers."""
        server = smtp_server_factory(tls="ssl", certificate=smtp_certificate)
        with smtp_backend(server, security="ssl", verify=False) as backend:
            [result] = backend.send_messages([make_message(1)])
        assert result.outcome is Outcome.SENT


@pytest.mark.parametrize(
    ("code", "at_rcpt", "outcome"),
    [
        (250, False, Outcome.SENT),
        (421, False, Outcome.TEMPORARY),
        (450, True, Outcome.TEMPORARY),
        (530, False, Outcome.TEMPORARY),
        (550, True, Outcome.PERMANENT),
        (552, True, Outcome.TEMPORARY),
        (552, False, Outcome.PERMANENT),
        (554, False, Outcome.PERMANENT),
    ],
)
def test_smtp_codes_classify_as_rfc_5321_says(code: int, at_rcpt: bool, outcome: Outcome) -> None:
    """2xx SENT, 4xx TEMPORARY, 5xx PERMANENT, except 552 at RCPT and 530."""
    assert Outcome.from_smtp_code(code, at_rcpt=at_rcpt) is outcome


# -- loading backends ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls"),
    [("console", ConsoleBackend), ("file", FileBackend), ("memory", MemoryBackend),
     ("smtp", SMTPBackend)],
)
def test_builtin_backends_load_by_name(name: str, cls: type[BaseBackend]) -> None:
    """Each built-in name gives its class, whose ``name`` matches."""
    assert backend_class(name) is cls
    assert cls.name == name


def test_unknown_backend_name_lists_the_valid_names() -> None:
    """A typo fails with the valid names and the setting to change."""
    with pytest.raises(ConfigError) as info:
        backend_class("carrier-pigeon")
    assert str(info.value).startswith(
        "unknown mail backend 'carrier-pigeon': use one of console, file, memory, smtp"
    )
    assert "module:Class" in str(info.value) and "DIGEST_BACKEND" in str(info.value)


def test_module_class_path_loads_a_class_from_a_test_module() -> None:
    """``module:Class`` imports the module and returns the class."""
    assert backend_class(f"{__name__}:RecordingBackend") is RecordingBackend


def test_module_that_cannot_be_imported_is_named_with_the_error() -> None:
    """An import failure names the module and the underlying error."""
    with pytest.raises(ConfigError) as info:
        backend_class("no_such_digest_plugin.mail:Backend")
    assert "cannot import module 'no_such_digest_plugin.mail'" in str(info.value)
    assert "ModuleNotFoundError" in str(info.value)


def test_missing_class_in_module_is_reported() -> None:
    """A module without the named class says so."""
    with pytest.raises(ConfigError, match="has no 'NoSuchBackend'"):
        backend_class(f"{__name__}:NoSuchBackend")


def test_class_that_is_not_a_backend_is_refused() -> None:
    """Only BaseBackend subclasses are accepted."""
    with pytest.raises(ConfigError, match="not a subclass of"):
        backend_class(f"{__name__}:Harness")


def install_fake_plugin(path: Path, entry: str) -> None:
    """Make an installed distribution in ``path`` whose digest.backends has ``entry``."""
    dist = path / "digest_test_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: digest-test-plugin\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(f"[digest.backends]\n{entry}\n")


def test_entry_point_plugin_loads_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed distribution's ``digest.backends`` entry point is found by name."""
    install_fake_plugin(tmp_path, f"recording = {__name__}:RecordingBackend")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert backend_class("recording") is RecordingBackend
    assert "recording" in backend_names()
    backend = get_backend(Settings(backend="recording"))
    assert isinstance(backend, RecordingBackend)


def test_broken_entry_point_names_the_plugin_and_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plugin that fails to import is reported with its entry point and the error."""
    install_fake_plugin(tmp_path, "broken = no_such_digest_plugin:Backend")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as info:
        backend_class("broken")
    assert "'no_such_digest_plugin:Backend'" in str(info.value)
    assert "ModuleNotFoundError" in str(info.value)


def test_plugins_cannot_take_over_builtin_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry point called ``smtp`` does not replace the built-in SMTP backend."""
    install_fake_plugin(tmp_path, f"smtp = {__name__}:RecordingBackend")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert backend_class("smtp") is SMTPBackend


def test_get_backend_configures_smtp_from_settings_and_overrides() -> None:
    """Settings fill the constructor; keyword overrides win."""
    settings = Settings(
        backend="smtp", smtp_host="mail.example.org", smtp_port=465, smtp_security="ssl",
        smtp_username="ann", smtp_password="pw", smtp_connections=3, smtp_timeout=12.0,
    )
    backend = get_backend(settings, timeout=3.0, local_hostname="me.example.org")
    assert isinstance(backend, SMTPBackend)
    assert (backend.host, backend.port, backend.security) == ("mail.example.org", 465, "ssl")
    assert (backend.username, backend.password, backend.connections) == ("ann", "pw", 3)
    assert (backend.timeout, backend.connect_timeout) == (3.0, 3.0)
    assert backend.local_hostname == "me.example.org"


def test_get_backend_configures_file_dir_from_settings(tmp_path: Path) -> None:
    """The file backend takes its folder from settings.file_dir."""
    backend = get_backend(Settings(backend="file", file_dir=str(tmp_path / "out")))
    assert isinstance(backend, FileBackend)
    assert backend.file_dir == tmp_path / "out"
