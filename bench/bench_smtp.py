"""SMTP and DKIM benchmarks: what one core builds and signs, and what goes into smtp-sink.

Figures (each a median of --repeats runs, interleaved so load changes hit all alike):

* sign (benchmark 3)   messages/s on one core, built by MessageTemplate and signed: none,
                       rsa-sha256 (2048-bit), ed25519-sha256, dual, all through OpenSSL; and
                       dkimpy signing the same unsigned messages (rsa, ed25519)
* wire (benchmark 1)   into Postfix's smtp-sink on loopback, the same N pre-built messages:
                       a bare pipelined client (raw sockets, nothing else), digest's SMTP
                       backend alone (no database), `digest send` end to end on SQLite
                       (the CLI, all bookkeeping), and the naive script (Jinja + MJML +
                       EmailMessage per subscriber, a new connection per message; run on a
                       sample, it is ~100x slower)

`run(quick)` returns the figures for bench/run.py; run directly it prints a Markdown table.

Run from the repository root:
    .venv/bin/python bench/bench_smtp.py                  # 20,000 subscribers, 4 repeats
    .venv/bin/python bench/bench_smtp.py --quick          # seconds, for CI
"""

from __future__ import annotations

import argparse
import os
import selectors
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_message import SUBJECT, realistic_issue
from send_setup import WEEK, seed_sqlite, send_env, write_dkim_key
from sink import smtp_sink

from digest.config import Settings
from digest.db import Database
from digest.issues import parse_week
from digest.mail.base import OutgoingMessage
from digest.mail.smtp import SMTPBackend
from digest.message import DkimSigner, MessageTemplate, make_message_id
from digest.personalise import Recipient
from digest.render import Renderer
from digest.sending import prepare

SENDER = "weekly@news.example.org"


@dataclass
class Result:
    """One measured figure: median of runs, and its ratio to a baseline from the same run."""

    benchmark: str  # "1" end-to-end send, "3" signing per core (the issue's numbering)
    name: str
    value: float
    unit: str
    command: str
    runs: list[float] = field(default_factory=list)
    baseline: str = ""
    ratio: float | None = None
    note: str = ""


# -- benchmark 3: build and sign on one core -------------------------------------------------


def _recipients(count: int) -> list[Recipient]:
    names = ["Ann Example", "José Müller", "李小龙", "", "Zoë O'Brien-Smith"]
    return [
        Recipient(
            email=f"reader{i}@example.com", name=names[i % len(names)],
            unsubscribe_url=f"https://news.example.org/u/{'T' * 60}{i}",
            preferences_url=f"https://news.example.org/preferences/{'P' * 60}{i}",
            view_url="https://news.example.org/archive/2025-W47",
        )
        for i in range(count)
    ]


def _signers(folder: Path) -> dict[str, DkimSigner | None]:
    rsa_path = write_dkim_key(folder, "rsa-sha256")
    ed_path = write_dkim_key(folder, "ed25519-sha256")
    def signer(**dkim: str) -> DkimSigner | None:
        return DkimSigner.from_settings(Settings(dkim_domain="news.example.org",
                                                 dkim_selector="bench", **dkim))

    return {
        "unsigned": None,
        "rsa-sha256": signer(dkim_private_key=str(rsa_path)),
        "ed25519-sha256": signer(dkim_private_key=str(ed_path),
                                 dkim_algorithm="ed25519-sha256"),
        "dual": signer(dkim_private_key=str(rsa_path), dkim_ed25519_selector="bench-ed",
                       dkim_ed25519_private_key=str(ed_path)),
    }


def sign_figures(count: int, repeats: int) -> list[Result]:
    """Messages/s per core for each signing choice, and dkimpy for comparison."""
    import dkim  # dkimpy, the comparison

    html, text = realistic_issue()
    settings = Settings(from_email=SENDER)
    recipients = _recipients(count)
    ids = [make_message_id("news.example.org") for _ in recipients]
    runs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        signers = _signers(Path(tmp))
        rsa_pem = write_dkim_key(Path(tmp), "rsa-sha256").read_bytes()
        ed_seed = _ed25519_seed(write_dkim_key(Path(tmp), "ed25519-sha256").read_bytes())
        templates = {name: MessageTemplate(SUBJECT, html, text, settings, signer=signer)
                     for name, signer in signers.items()}
        unsigned = [templates["unsigned"].build(r, i) for r, i in zip(recipients, ids,
                                                                       strict=True)]
        headers = [b"from", b"to", b"subject", b"date", b"message-id", b"list-id",
                   b"list-unsubscribe", b"list-unsubscribe-post", b"mime-version",
                   b"content-type"]

        def dkimpy(key: bytes, algorithm: bytes) -> Callable[[], None]:
            def sign() -> None:
                for data in unsigned[: max(20, count // 20)]:
                    dkim.sign(data, b"bench", b"news.example.org", key,
                              canonicalize=(b"relaxed", b"simple"),
                              signature_algorithm=algorithm, include_headers=headers)
            return sign

        def build(template: MessageTemplate) -> Callable[[], None]:
            def run() -> None:
                for recipient, message_id in zip(recipients, ids, strict=True):
                    template.build(recipient, message_id)
            return run

        cases: dict[str, tuple[Callable[[], None], int]] = {
            name: (build(template), count) for name, template in templates.items()
        }
        cases["dkimpy rsa-sha256"] = (dkimpy(rsa_pem, b"rsa-sha256"), max(20, count // 20))
        cases["dkimpy ed25519-sha256"] = (dkimpy(ed_seed, b"ed25519-sha256"),
                                          max(20, count // 20))
        for _ in range(repeats):
            for name, (action, done) in cases.items():
                started = time.process_time()
                action()
                runs.setdefault(name, []).append(done / (time.process_time() - started))
    command = "python bench/bench_smtp.py --only sign"
    out = []
    for name, values in runs.items():
        label = name if name.startswith("dkimpy") else f"build + sign {name}"
        if name == "unsigned":
            label = "build, unsigned"
        result = Result("3", label, statistics.median(values), "msg/s per core (CPU time)",
                        command, values)
        if name.startswith("dkimpy"):
            result.note = "signing only (message already built)"
        out.append(result)
    ours = {r.name: r for r in out}
    for algorithm in ("rsa-sha256", "ed25519-sha256"):
        mine, theirs = ours[f"build + sign {algorithm}"], ours[f"dkimpy {algorithm}"]
        mine.baseline, mine.ratio = theirs.name, mine.value / theirs.value
    return out


def _ed25519_seed(pem: bytes) -> bytes:
    """The base64 32-byte seed dkimpy wants, from a PKCS#8 PEM Ed25519 key."""
    import base64

    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pem, password=None)
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    return base64.b64encode(raw)


# -- benchmark 1: into smtp-sink ---------------------------------------------------------------


def prebuilt(count: int) -> list[OutgoingMessage]:
    """count unsigned messages of the realistic issue, built once, before any clock starts."""
    html, text = realistic_issue()
    template = MessageTemplate(SUBJECT, html, text, Settings(from_email=SENDER))
    return [template.build_outgoing(r, make_message_id("news.example.org"))
            for r in _recipients(count)]


class _BareConnection:
    """One socket of the bare client and the message whose envelope is on it."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"EHLO bench\r\n")
        greeting = b""
        while b"\n250 " not in greeting:
            greeting += self.sock.recv(4096)
        self.buffer = b""
        self.current: OutgoingMessage | None = None


def bare_client(messages: Sequence[OutgoingMessage], port: int, connections: int) -> None:
    """The floor: pipelined MAIL/RCPT/DATA, the body and the next envelope in one write, over
    a few sockets read when readable. No classification beyond "was it 2xx/354", no retries."""
    selector = selectors.DefaultSelector()
    queue = list(reversed(messages))

    def envelope(connection: _BareConnection) -> bytes:
        if not queue:
            connection.current = None
            return b""
        message = connection.current = queue.pop()
        return (b"MAIL FROM:<" + message.sender.encode() + b">\r\nRCPT TO:<"
                + message.recipient.encode() + b">\r\nDATA\r\n")

    pool = [_BareConnection(port) for _ in range(min(connections, len(messages)))]
    for connection in pool:
        selector.register(connection.sock, selectors.EVENT_READ, connection)
        connection.sock.sendall(envelope(connection))
    while any(connection.current is not None for connection in pool):
        for key, _ in selector.select(10):
            connection = key.data
            chunk = connection.sock.recv(65536)
            if not chunk:
                raise RuntimeError("smtp-sink hung up")
            lines = (connection.buffer + chunk).split(b"\n")
            connection.buffer = lines.pop()
            for line in lines:
                if line.startswith(b"354") and connection.current is not None:
                    body = connection.current.data
                    connection.sock.sendall(body + b".\r\n" + envelope(connection))
                elif not line.startswith(b"250"):
                    raise RuntimeError(f"smtp-sink said {line!r}")
    for connection in pool:
        connection.sock.close()
    selector.close()


def backend_alone(messages: Sequence[OutgoingMessage], port: int, connections: int) -> None:
    """digest's SMTP backend with pre-built messages: the wire path without any database."""
    backend = SMTPBackend(host="127.0.0.1", port=port, security="none",
                          connections=connections)
    with backend:
        for start in range(0, len(messages), 200):
            results = backend.send_messages(messages[start:start + 200])
            assert all(r.outcome.value == "sent" for r in results), results[:3]


def naive_script(url: str, port: int, count: int) -> None:
    """What a first script does: per subscriber, render the issue (Jinja + MJML), build an
    EmailMessage, open a connection, send, quit."""
    settings = Settings(database_url=url, secret_key=("bench-secret-key-0123",),
                        postal_address="1 Example Street", base_url="https://news.example.org",
                        from_email=SENDER)
    db = Database(url)
    content = prepare(db, settings, parse_week(WEEK, settings.tz), check=False).content
    for recipient in _recipients(count):
        compiled = Renderer(settings).compile(content)
        message = EmailMessage()
        message["From"] = SENDER
        message["To"] = recipient.email
        message["Subject"] = compiled.subject
        message["Message-ID"] = f"<{make_message_id('news.example.org')}>"
        message.set_content(compiled.text.fill(recipient))
        message.add_alternative(compiled.html.fill(recipient), subtype="html")
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.send_message(message)
    db.dispose()


def digest_send(folder: Path, port: int, count: int, run: int,
                extra: dict[str, str]) -> tuple[float, float]:
    """`digest send` of a freshly seeded SQLite list: (wall seconds, CPU seconds)."""
    url = seed_sqlite(folder, count, name=f"send{run}")
    env = send_env(url, port, folder, **extra)
    command = [str(Path(sys.executable).parent / "digest"), "send", "--week", WEEK,
               "--ignore-check", "--quiet"]
    before = os.times()
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=folder, capture_output=True, text=True,
                          check=False)
    seconds = time.perf_counter() - started
    after = os.times()
    if done.returncode != 0 or f"{count} sent" not in done.stdout:
        raise RuntimeError(f"digest send failed: {done.stdout}\n{done.stderr}")
    return seconds, (after.children_user - before.children_user
                     + after.children_system - before.children_system)


def wire_figures(count: int, repeats: int, connections: int, naive_count: int) -> list[Result]:
    """Messages/s into smtp-sink: the bare client, the backend alone, digest send, naive."""
    messages = prebuilt(count)
    runs: dict[str, list[float]] = {}
    cpu: list[float] = []
    quick = count < 5000
    with tempfile.TemporaryDirectory() as tmp, smtp_sink() as port:
        folder = Path(tmp)
        naive_url = seed_sqlite(folder, 10, name="naive")
        extra = {"SMTP_CONNECTIONS": str(connections)}
        for run in range(repeats):
            started = time.perf_counter()
            bare_client(messages, port, connections)
            runs.setdefault("bare", []).append(count / (time.perf_counter() - started))
            started = time.perf_counter()
            backend_alone(messages, port, connections)
            runs.setdefault("backend", []).append(count / (time.perf_counter() - started))
            seconds, used = digest_send(folder, port, count, run, extra)
            runs.setdefault("send", []).append(count / seconds)
            cpu.append(used / count * 1000)
            started = time.perf_counter()
            naive_script(naive_url, port, naive_count)
            runs.setdefault("naive", []).append(naive_count / (time.perf_counter() - started))
    flag = " --quick" if quick else ""
    command = f"python bench/bench_smtp.py --only wire{flag}"
    bare = Result("1", "bare pipelined client, pre-built messages", statistics.median(
        runs["bare"]), "msg/s", command, runs["bare"])
    out = [bare]
    for key, name, note in (
        ("backend", "digest SMTP backend alone, pre-built messages", "no database"),
        ("send", f"`digest send` end to end, SQLite, {count:,} subscribers",
         f"whole command incl. start-up, render and prepare; {statistics.median(cpu):.3f} ms "
         "CPU per message"),
        ("naive", "naive script (Jinja + MJML + EmailMessage, new connection each)",
         f"{naive_count} messages per run"),
    ):
        result = Result("1", name, statistics.median(runs[key]), "msg/s", command, runs[key],
                        baseline=bare.name, note=note)
        result.ratio = result.value / bare.value
        out.append(result)
    return out


def run(quick: bool) -> list[Result]:
    """Every figure of this module; quick runs in seconds (for CI), the full one in minutes."""
    if quick:
        return sign_figures(200, 1) + wire_figures(1000, 1, 8, 5)
    return sign_figures(2000, 5) + wire_figures(20_000, 4, 8, 100)


def table(results: Sequence[Result]) -> str:
    """The figures as a Markdown table."""
    rows = ["| bench | figure | median | unit | runs | vs baseline | note |",
            "|---|---|---:|---|---|---:|---|"]
    for r in results:
        ratio = f"{r.ratio:.2f}× {r.baseline}" if r.ratio is not None else ""
        runs = ", ".join(f"{v:,.0f}" for v in r.runs)
        rows.append(f"| {r.benchmark} | {r.name} | {r.value:,.0f} | {r.unit} | {runs} | "
                    f"{ratio} | {r.note} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, for CI")
    parser.add_argument("--only", choices=("sign", "wire"))
    parser.add_argument("--subscribers", type=int, help="messages per wire run")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    count = args.subscribers or (1000 if args.quick else 20_000)
    repeats = args.repeats or (1 if args.quick else 4)
    results: list[Result] = []
    if args.only in (None, "sign"):
        results += sign_figures(200 if args.quick else 2000, repeats)
    if args.only in (None, "wire"):
        results += wire_figures(count, repeats, args.connections, 5 if args.quick else 100)
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} at the end")
    print(table(results))


if __name__ == "__main__":
    main()
