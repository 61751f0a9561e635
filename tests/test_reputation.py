"""The reputation gate: `digest check` and `digest send` refuse mail that inboxes would
reject (http unsubscribe, DKIM not aligned with From) unless the editor overrides it."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from email import message_from_bytes
from email.policy import compat32
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from digest.checks import OVERRIDE_FLAG
from digest.cli import main
from digest.config import Settings
from digest.db import Database
from digest.domains import aligned, organisational_domain
from digest.mail.memory import MemoryBackend
from tests.conftest import seed_articles, seed_subscribers, send_window

WEEK = ["--week", "2025-W47"]


def openssl(*args: str) -> bytes:
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    return subprocess.run(["openssl", *args], check=True, capture_output=True).stdout


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An RSA-2048 private key file, as `openssl genrsa` writes it."""
    path = tmp_path_factory.mktemp("dkim") / "dkim.pem"
    openssl("genrsa", "-out", str(path), "2048")
    return path


@pytest.fixture
def env(settings: Settings, db: Database) -> dict[str, str]:
    """DIGEST_* variables for a week with articles and readers, sending to memory."""
    MemoryBackend.clear()
    seed_articles(db, send_window(settings), 2)
    seed_subscribers(db, 3)
    return {
        "DIGEST_DATABASE_URL": settings.database_url,
        "DIGEST_SECRET_KEY": ",".join(settings.secret_key),
        "DIGEST_POSTAL_ADDRESS": settings.postal_address,
        "DIGEST_BASE_URL": settings.base_url,
        "DIGEST_FROM_EMAIL": settings.from_email,
        "DIGEST_BACKEND": "memory",
    }


def test_organisational_domains_follow_the_public_suffix_list() -> None:
    assert organisational_domain("news.example.co.uk") == "example.co.uk"
    assert organisational_domain("Mail.News.Example.ORG.") == "example.org"
    assert organisational_domain("localhost") == "localhost"
    assert aligned("mail.example.co.uk", "news.example.co.uk")
    # Two registrable names under one public suffix are different organisations.
    assert not aligned("example.co.uk", "other.co.uk")
    assert not aligned("alice.github.io", "bob.github.io")


def test_an_http_one_click_link_fails_check_and_send_unless_overridden(
    runner: CliRunner, env: dict[str, str]
) -> None:
    env = {**env, "DIGEST_BASE_URL": "http://news.example.org"}
    result = runner.invoke(main, ["check", *WEEK], env=env)
    assert result.exit_code == 1, result.output
    assert "error: List-Unsubscribe holds http://news.example.org/u/" in result.output
    assert "not https; RFC 8058" in result.output
    assert f"(override with {OVERRIDE_FLAG})" in result.output

    forced = runner.invoke(main, ["check", *WEEK, OVERRIDE_FLAG], env=env)
    assert forced.exit_code == 0, forced.output
    assert "OK: ready to send" in forced.output

    refused = runner.invoke(main, ["send", *WEEK], env=env)
    assert refused.exit_code == 1
    assert "would hurt the sender's reputation" in refused.output
    assert f"re-run with {OVERRIDE_FLAG}" in refused.output
    assert MemoryBackend.outbox == []

    sent = runner.invoke(main, ["send", *WEEK, OVERRIDE_FLAG], env=env)
    assert sent.exit_code == 0, sent.output
    assert f"(sending anyway: {OVERRIDE_FLAG})" in sent.stderr
    assert len(MemoryBackend.outbox) == 3


def test_a_mailto_beside_the_https_link_passes(runner: CliRunner, env: dict[str, str]) -> None:
    env = {**env, "DIGEST_LIST_UNSUBSCRIBE_MAILTO": "leave@news.example.org"}
    result = runner.invoke(main, ["check", *WEEK], env=env)
    assert result.exit_code == 0, result.output
    assert "List-Unsubscribe holds" not in result.output


def test_a_dkim_domain_not_aligned_with_from_fails(
    runner: CliRunner, env: dict[str, str], rsa_key: Path
) -> None:
    dkim = {"DIGEST_DKIM_SELECTOR": "s1", "DIGEST_DKIM_PRIVATE_KEY": str(rsa_key)}
    misaligned = {**env, **dkim, "DIGEST_DKIM_DOMAIN": "mailer.example.net"}
    result = runner.invoke(main, ["check", *WEEK], env=misaligned)
    assert result.exit_code == 1, result.output
    assert ("error: dkim_domain mailer.example.net is not aligned with the From domain "
            "news.example.org (example.net is not example.org)") in result.output
    refused = runner.invoke(main, ["send", *WEEK], env=misaligned)
    assert refused.exit_code == 1
    assert MemoryBackend.outbox == []

    # Relaxed alignment: the parent domain's key covers news.example.org.
    parent = {**env, **dkim, "DIGEST_DKIM_DOMAIN": "example.org"}
    result = runner.invoke(main, ["check", *WEEK], env=parent)
    assert result.exit_code == 0, result.output
    assert "note: DKIM signs as example.org, aligned with From (news.example.org)." \
        in result.output
    assert "DKIM is not configured" not in result.output


def test_no_dkim_at_all_is_a_warning_that_does_not_block(
    runner: CliRunner, env: dict[str, str]
) -> None:
    result = runner.invoke(main, ["check", *WEEK], env=env)
    assert result.exit_code == 0, result.output
    assert "warning: DKIM is not configured, so digest sends unsigned mail" in result.output
    sent = runner.invoke(main, ["send", *WEEK], env=env)
    assert sent.exit_code == 0, sent.output
    assert "warning: DKIM is not configured" in sent.stderr
    assert len(MemoryBackend.outbox) == 3


# --- digest dns


def txt_value(output: str, name: str) -> bytes:
    """The TXT record named name in `digest dns` output, its quoted strings joined."""
    for line in output.splitlines():
        if line.startswith(f"{name}. 3600 IN TXT "):
            return "".join(re.findall(r'"([^"]*)"', line)).encode("ascii")
    raise AssertionError(f"no TXT record for {name} in:\n{output}")


def dns_stub(name: str, record: bytes) -> Any:
    """dkimpy's dnsfunc answering only name, as a resolver holding the published record would."""
    def lookup(qname: bytes, timeout: int = 5) -> bytes | None:
        return record if qname == f"{name}.".encode() else None
    return lookup


@pytest.fixture(scope="module")
def ed25519_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Ed25519 private key file, as `openssl genpkey` writes it."""
    pytest.importorskip("nacl.signing", reason="ed25519-sha256 needs PyNaCl")
    path = tmp_path_factory.mktemp("dkim") / "ed25519.pem"
    openssl("genpkey", "-algorithm", "ed25519", "-out", str(path))
    return path


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_the_printed_dkim_record_verifies_what_digest_sends(
    runner: CliRunner, env: dict[str, str], rsa_key: Path, ed25519_key: Path, algorithm: str
) -> None:
    import dkim

    key = rsa_key if algorithm == "rsa-sha256" else ed25519_key
    env = {**env, "DIGEST_DKIM_DOMAIN": "example.org", "DIGEST_DKIM_SELECTOR": "s1",
           "DIGEST_DKIM_PRIVATE_KEY": str(key), "DIGEST_DKIM_ALGORITHM": algorithm}
    printed = runner.invoke(main, ["dns"], env=env)
    assert printed.exit_code == 0, printed.output
    record = txt_value(printed.output, "s1._domainkey.example.org")
    kind = b"rsa" if algorithm == "rsa-sha256" else b"ed25519"
    assert record.startswith(b"v=DKIM1; k=" + kind + b"; p=")
    if algorithm == "rsa-sha256":
        # The same key openssl derives from the private key file.
        public = openssl("rsa", "-in", str(key), "-pubout", "-outform", "DER")
        assert record.endswith(base64.b64encode(public))

    sent = runner.invoke(main, ["send", *WEEK], env=env)
    assert sent.exit_code == 0, sent.output
    assert len(MemoryBackend.outbox) == 3
    for message in MemoryBackend.outbox:
        assert dkim.verify(message.data, dnsfunc=dns_stub("s1._domainkey.example.org", record))


def test_dual_signing_prints_both_records_and_both_signatures_verify(
    runner: CliRunner, env: dict[str, str], rsa_key: Path, ed25519_key: Path
) -> None:
    """With an Ed25519 key beside the RSA one, `digest dns` prints both records and every
    sent message carries two signatures that verify against them (RFC 8463 §3)."""
    import dkim

    env = {**env, "DIGEST_DKIM_DOMAIN": "example.org", "DIGEST_DKIM_SELECTOR": "s1",
           "DIGEST_DKIM_PRIVATE_KEY": str(rsa_key), "DIGEST_DKIM_ED25519_SELECTOR": "e1",
           "DIGEST_DKIM_ED25519_PRIVATE_KEY": str(ed25519_key)}
    printed = runner.invoke(main, ["dns"], env=env)
    assert printed.exit_code == 0, printed.output
    records = {f"{name}._domainkey.example.org.".encode(): txt_value(
        printed.output, f"{name}._domainkey.example.org") for name in ("s1", "e1")}
    assert records[b"e1._domainkey.example.org."].startswith(b"v=DKIM1; k=ed25519; p=")

    sent = runner.invoke(main, ["send", *WEEK], env=env)
    assert sent.exit_code == 0, sent.output
    assert len(MemoryBackend.outbox) == 3
    for message in MemoryBackend.outbox:
        checker = dkim.DKIM(message.data)
        for index in (0, 1):
            assert checker.verify(idx=index, dnsfunc=lambda q, timeout=5: records.get(q))


def test_dns_prints_spf_dmarc_and_the_unsubscribe_hosts_without_lookups(
    runner: CliRunner, env: dict[str, str]
) -> None:
    env = {**env, "DIGEST_SMTP_HOST": "smtp.relay.example.net",
           "DIGEST_LIST_UNSUBSCRIBE_MAILTO": "leave@lists.example.org",
           "DIGEST_DMARC_REPORT_ADDRESS": "reports@dmarc.example.com"}
    result = runner.invoke(main, ["dns"], env=env)
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("; DKIM is not configured. Make a key (openssl genrsa")
    assert txt_value(out, "news.example.org") == b"v=spf1 a:smtp.relay.example.net ~all"
    assert txt_value(out, "_dmarc.news.example.org") == (
        b"v=DMARC1; p=none; rua=mailto:reports@dmarc.example.com; adkim=r; aspf=r")
    # A report address outside the organisation needs that domain's consent (RFC 7489 §7.1).
    assert "news.example.org._report._dmarc.dmarc.example.com" in out
    assert "; news.example.org: A/AAAA or CNAME pointing at the host running digest serve" \
        in out
    assert "; lists.example.org: MX pointing at a server that delivers to " \
        "leave@lists.example.org" in out

    local = runner.invoke(main, ["dns"], env={**env, "DIGEST_SMTP_HOST": "127.0.0.1"})
    assert txt_value(local.output, "news.example.org") == b"v=spf1 mx ~all"
    assert "smtp_host is 127.0.0.1, a local relay" in local.output
    public = runner.invoke(main, ["dns"], env={**env, "DIGEST_SMTP_HOST": "93.184.216.34"})
    assert txt_value(public.output, "news.example.org") == b"v=spf1 ip4:93.184.216.34 ~all"


# --- headers


def dkim_tags(data: bytes) -> dict[str, str]:
    header = message_from_bytes(data, policy=compat32)["DKIM-Signature"]
    return dict(
        part.strip().split("=", 1)
        for part in re.sub(r"\s+", "", str(header)).split(";") if part
    )


def test_feedback_id_list_archive_and_the_mailto_subject_are_signed(
    runner: CliRunner, env: dict[str, str], rsa_key: Path
) -> None:
    import dkim

    env = {**env, "DIGEST_DKIM_DOMAIN": "news.example.org", "DIGEST_DKIM_SELECTOR": "s1",
           "DIGEST_DKIM_PRIVATE_KEY": str(rsa_key),
           "DIGEST_LIST_UNSUBSCRIBE_MAILTO": "leave@news.example.org",
           # Header-breaking characters in a setting are replaced, never sent.
           "DIGEST_UTM_CAMPAIGN": "autumn\r\nBcc: x@evil.example"}
    record = txt_value(runner.invoke(main, ["dns"], env=env).output,
                       "s1._domainkey.news.example.org")
    sent = runner.invoke(main, ["send", *WEEK], env=env)
    assert sent.exit_code == 0, sent.output
    assert len(MemoryBackend.outbox) == 3
    for message in MemoryBackend.outbox:
        msg = message_from_bytes(message.data, policy=compat32)
        assert msg["Feedback-ID"] == (
            "autumn-Bcc-x-evil.example:2025-W47:weekly.news.example.org:example.org")
        assert msg["List-Archive"] == "<https://news.example.org/archive>"
        unsubscribe = re.sub(r"\s+", " ", msg["List-Unsubscribe"])
        assert re.fullmatch(
            r"<https://news\.example\.org/u/[^>]+>, "
            r"<mailto:leave@news\.example\.org\?subject=unsubscribe%20weekly\.news\.example\.org>",
            unsubscribe,
        ), unsubscribe
        assert "Bcc" not in msg
        signed = dkim_tags(message.data)["h"].lower().split(":")
        for name in ("feedback-id", "list-archive", "list-unsubscribe",
                     "list-unsubscribe-post", "list-id", "from"):
            assert name in signed, (name, signed)
        assert dkim.verify(message.data,
                           dnsfunc=dns_stub("s1._domainkey.news.example.org", record))
        # Changing a signed header breaks the signature.
        forged = message.data.replace(b"Feedback-ID: autumn", b"Feedback-ID: winter", 1)
        assert not dkim.verify(forged,
                               dnsfunc=dns_stub("s1._domainkey.news.example.org", record))


def test_feedback_id_is_configurable_and_checked(runner: CliRunner, env: dict[str, str]) -> None:
    custom = {**env, "DIGEST_FEEDBACK_ID": "{issue}:{sender}", "DIGEST_FEEDBACK_ID_SENDER": "ex1"}
    sent = runner.invoke(main, ["send", *WEEK], env=custom)
    assert sent.exit_code == 0, sent.output
    msg = message_from_bytes(MemoryBackend.outbox[0].data, policy=compat32)
    assert msg["Feedback-ID"] == "2025-W47:ex1"

    bad = runner.invoke(main, ["check", *WEEK], env={**env, "DIGEST_FEEDBACK_ID": "{reader}"})
    assert bad.exit_code == 1
    assert "feedback_id '{reader}' may use only {campaign}, {issue}, {list} and {sender}" \
        in bad.output
