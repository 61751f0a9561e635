"""MessageTemplate: spliced bytes equal the stdlib's message, headers resist injection, DKIM."""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import re
import shutil
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from digest import message as message_module
from digest import mime
from digest.config import Settings
from digest.errors import ConfigError, InputError
from digest.message import (
    DkimSigner,
    MessageTemplate,
    check_address,
    clean_header_text,
    make_message_id,
)
from digest.personalise import Recipient, SplicedTemplate, escape

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))
DATE = datetime(2024, 5, 17, 9, 30, tzinfo=UTC)
SUBJECT = "The Weekly Digest: Café prices fall — and 3 more"
BASE_HEADERS = {
    "From", "To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe", "List-Archive",
    "List-Unsubscribe-Post", "Precedence", "MIME-Version", "Content-Type",
}

HTML = SplicedTemplate(
    (
        '<!doctype html>\n<html><body style="margin:0">\n<p><a href="',
        '">View in browser</a></p>\n<p style="font-size:16px">Hello ',
        ",</p>\n" + '<p class="x">Café “quotes” — ünïcode and a long line ' + "word " * 40
        + "</p>\n.leading dot\nFrom the editor\n" + "trailing space \n" + '<p>Sent to ',
        '. <a href="',
        '">Unsubscribe</a> · <a href="',
        '">Preferences</a></p>\n<p>Bye ',
        "</p></body></html>",
    ),
    (
        ("view_url", "url"), ("name", "html"), ("email", "html"),
        ("unsubscribe_url", "url"), ("preferences_url", "url"), ("name", "html"),
    ),
)
TEXT_PART = SplicedTemplate(
    (
        "Hello ",
        ",\n\nCafé prices fall.\n.dot line\n" + "x" * 200 + "\nSent to ",
        "\nUnsubscribe: ",
        "\n",
    ),
    (("name", "text"), ("email", "text"), ("unsubscribe_url", "text")),
)


def recipient(name: str = "Alice Example", address: str = "alice@example.com",
              url: str = "https://digest.example.com/u/TOKEN-abc.def_123") -> Recipient:
    return Recipient(
        email=address, name=name, unsubscribe_url=url,
        preferences_url="https://digest.example.com/p/TOKEN?a=1&b=2",
        view_url="https://digest.example.com/archive/2024-20",
    )


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def header_block(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


def check_lines(data: bytes) -> None:
    """CRLF only; header lines ≤ 78 unless one unbreakable token; body lines ≤ 76 (QP)."""
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    head, body = data.split(b"\r\n\r\n", 1)
    for line in head.split(b"\r\n"):
        assert len(line) <= 998  # RFC 5322 §2.1.1
        assert len(line) <= 78 or len(line.split()) <= 2, line
    for line in body.split(b"\r\n"):
        assert len(line) <= 76, line  # RFC 2045 §6.7
        assert not line.endswith((b" ", b"\t")), line
        assert not line.startswith(b"."), line


def stdlib_message(settings: Settings, subject: str, person: Recipient,
                   message_id: str, date: datetime) -> EmailMessage:
    """The same message built the straightforward way."""
    msg = EmailMessage()
    msg["From"] = Address(settings.from_name, addr_spec=settings.from_email)
    if settings.reply_to:
        msg["Reply-To"] = settings.reply_to
    msg["To"] = Address(person.name, addr_spec=person.email) if person.name else person.email
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = f"<{message_id}>"
    msg["List-Id"] = f"{settings.newsletter_name} <{settings.effective_list_id}>"
    unsubscribe = f"<{person.unsubscribe_url}>"
    if settings.list_unsubscribe_mailto:
        unsubscribe += (f", <mailto:{settings.list_unsubscribe_mailto}"
                        f"?subject=unsubscribe%20{settings.effective_list_id}>")
    msg["List-Unsubscribe"] = unsubscribe
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["List-Archive"] = f"<{settings.base_url}/archive>"
    msg["Precedence"] = "bulk"
    msg.set_content(TEXT_PART.fill(person), cte="quoted-printable")
    msg.add_alternative(HTML.fill(person), subtype="html", cte="quoted-printable")
    return parse(msg.as_bytes(policy=email.policy.SMTP))


@pytest.fixture
def config() -> Settings:
    return Settings(reply_to="editor@example.com",
                    list_unsubscribe_mailto="unsubscribe@example.com")


@pytest.fixture
def template(config: Settings) -> MessageTemplate:
    return MessageTemplate(SUBJECT, HTML, TEXT_PART, config)


# --- structure and equivalence


def test_message_has_the_bulk_sender_headers_and_two_qp_parts(template: MessageTemplate) -> None:
    data = template.build(recipient(), "abc@example.com", DATE)
    msg = parse(data)
    assert Counter(msg.keys()) == Counter(BASE_HEADERS | {"Reply-To"})
    assert str(msg["List-Unsubscribe"]) == (
        "<https://digest.example.com/u/TOKEN-abc.def_123>, "
        "<mailto:unsubscribe@example.com?subject=unsubscribe%20weekly.example.com>"
    )
    assert str(msg["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    assert str(msg["List-Id"]) == "The Weekly Digest <weekly.example.com>"
    assert str(msg["Message-ID"]) == "<abc@example.com>"
    assert msg["Date"].datetime == DATE
    assert msg.get_content_type() == "multipart/alternative"
    plain, html = msg.iter_parts()
    for part, kind in ((plain, "text/plain"), (html, "text/html")):
        assert part.get_content_type() == kind
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert not msg.defects
    check_lines(data)


@pytest.mark.parametrize("name", [
    "Alice Example",
    "",
    "José Ramírez-Müller",
    "李小龙",
    '<script>alert("x")</script> & Bob',
    'Bob "The Builder" O\'Neil, Jr.',
    "Ünïcødé Name With Spaces and a very long tail of words that must fold somewhere ok",
    "A very long plain ASCII display name that cannot possibly fit on one header line",
])
def test_spliced_message_decodes_like_the_stdlib_one(config: Settings,
                                                     template: MessageTemplate,
                                                     name: str) -> None:
    person = recipient(name=name)
    ours = parse(template.build(person, "id-1@example.com", DATE))
    theirs = stdlib_message(config, SUBJECT, person, "id-1@example.com", DATE)
    assert set(ours.keys()) == set(theirs.keys())
    for header in ours:
        if header != "Content-Type":
            assert str(ours[header]) == str(theirs[header]), header
    assert ours["To"].addresses == theirs["To"].addresses
    for mine, reference in zip(ours.iter_parts(), theirs.iter_parts(), strict=True):
        assert mine.get_content_type() == reference.get_content_type()
        assert mine.get_content_charset() == reference.get_content_charset()
        assert mine.get_content() == reference.get_content()
    plain, html = ours.iter_parts()
    assert plain.get_content().replace("\r\n", "\n") == TEXT_PART.fill(person)
    assert html.get_content().replace("\r\n", "\n") == HTML.fill(person) + "\n"


def test_each_build_is_independent_and_date_defaults_to_now(template: MessageTemplate) -> None:
    first = template.build(recipient(name="Ann"), "1@example.com")
    second = template.build(recipient(name="Bea", address="bea@example.com"), "2@example.com")
    assert b"Ann" in first and b"Bea" not in first
    assert b"Bea" in second and b"Ann" not in second
    date = parse(first)["Date"].datetime
    assert abs(date - datetime.now(UTC)) < timedelta(minutes=1)
    naive = parse(template.build(recipient(), "3@example.com", datetime(2024, 1, 2, 3, 4)))
    assert naive["Date"].datetime == datetime(2024, 1, 2, 3, 4, tzinfo=UTC)
    local = datetime(2024, 1, 2, 3, 4, tzinfo=timezone(timedelta(hours=2)))
    assert parse(template.build(recipient(), "4@example.com", local))["Date"].datetime == local


def test_build_outgoing_uses_from_email_as_envelope_sender(template: MessageTemplate) -> None:
    out = template.build_outgoing(recipient(), "mid@example.com", DATE)
    assert out.sender == "digest@example.com"
    assert out.recipient == "alice@example.com"
    assert out.message_id == "mid@example.com"
    assert out.data == template.build(recipient(), "mid@example.com", DATE)


def test_non_ascii_from_name_subject_and_list_name() -> None:
    config = Settings(from_name="Café Hebdo", newsletter_name="Le Café")
    data = MessageTemplate("Économie : les prix baissent", HTML, TEXT_PART, config).build(
        recipient(), "x@example.com", DATE)
    msg = parse(data)
    assert msg["From"].addresses[0].display_name == "Café Hebdo"
    assert str(msg["Subject"]) == "Économie : les prix baissent"
    assert str(msg["List-Id"]) == "Le Café <weekly.example.com>"
    assert "Reply-To" not in msg
    assert str(msg["List-Unsubscribe"]) == "<https://digest.example.com/u/TOKEN-abc.def_123>"
    check_lines(data)


def test_empty_newsletter_name_keeps_list_id_brackets() -> None:
    data = MessageTemplate("S", HTML, TEXT_PART, Settings(newsletter_name="")).build(
        recipient(), "x@example.com", DATE)
    assert b"\r\nList-Id: <weekly.example.com>\r\n" in data


def test_make_message_id_is_unique_and_bracket_free() -> None:
    ids = {make_message_id("example.com") for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(r"[0-9a-f]{32}@example\.com", value) for value in ids)
    with pytest.raises(InputError):
        make_message_id("bad domain")


@pytest.mark.parametrize("bad", ["<x@example.com>", "x@example.com\r\nBcc: y@z", "no-at", ""])
def test_bad_message_id_is_refused(template: MessageTemplate, bad: str) -> None:
    with pytest.raises(InputError, match="Message-ID"):
        template.build(recipient(), bad)


def test_boundary_is_random_and_avoids_the_content(monkeypatch: pytest.MonkeyPatch) -> None:
    one = MessageTemplate("S", HTML, TEXT_PART, Settings())
    two = MessageTemplate("S", HTML, TEXT_PART, Settings())
    assert one.boundary != two.boundary
    tokens = iter(["0" * 32, "1" * 32])
    monkeypatch.setattr(message_module.secrets, "token_hex", lambda n: next(tokens))
    chosen = MessageTemplate._boundary([b"x=_digest_" + b"0" * 32 + b"x"])
    assert chosen == b"=_digest_" + b"1" * 32


def test_a_boundary_lookalike_in_content_is_encoded() -> None:
    template = MessageTemplate("S", SplicedTemplate(("--=_digest_0\n",), ()),
                               SplicedTemplate(("--=_digest_0\n",), ()), Settings())
    msg = parse(template.build(recipient(), "x@example.com", DATE))
    assert [part.get_content() for part in msg.iter_parts()] == ["--=_digest_0\r\n"] * 2


# --- header injection


@pytest.mark.parametrize("bad", [
    "a@example.com\r\nBcc: evil@example.net",
    "a@example.com\nBcc: evil@example.net",
    "<a@example.com>",
    "a@example.com, b@example.com",
    "a @example.com",
    "a@example.com\t",
    "a\u2028@example.com",
    "Name <a@example.com>",
    "no-at-sign",
    "a@b@example.com",
    "josé@example.com",
    "",
])
def test_unsafe_addresses_are_refused(template: MessageTemplate, bad: str) -> None:
    with pytest.raises(InputError):
        check_address(bad)
    with pytest.raises(InputError):
        template.build(recipient(address=bad), "x@example.com")


def test_internationalised_domain_goes_out_as_idna(template: MessageTemplate) -> None:
    assert check_address("ann@bücher.example") == "ann@xn--bcher-kva.example"
    out = template.build_outgoing(recipient(address="ann@bücher.example"), "x@example.com")
    assert out.recipient == "ann@xn--bcher-kva.example"
    assert parse(out.data)["To"].addresses[0].addr_spec == "ann@xn--bcher-kva.example"


@pytest.mark.parametrize("bad", [
    "https://example.com/u/x\r\nBcc: evil@example.net",
    "https://example.com/u/x>, <https://evil.example",
    "https://example.com/u/a b",
    "javascript:alert(1)",
    "https://example.com/ü",
    "https://example.com/" + "a" * 1000,
])
def test_unsafe_unsubscribe_urls_are_refused(template: MessageTemplate, bad: str) -> None:
    with pytest.raises(InputError, match="List-Unsubscribe"):
        template.build(recipient(url=bad), "x@example.com")


def test_encoded_word_lookalikes_are_shown_literally(config: Settings) -> None:
    trick = "=?utf-8?q?Evil=0D=0ABcc:_x@evil.example?="
    data = MessageTemplate(trick, HTML, TEXT_PART, config).build(
        recipient(name=trick), "x@example.com", DATE)
    msg = parse(data)
    assert str(msg["Subject"]) == trick
    assert msg["To"].addresses[0].display_name == trick
    assert Counter(msg.keys()) == Counter(BASE_HEADERS | {"Reply-To"})


def test_line_breaks_in_names_and_subject_cannot_add_headers(config: Settings) -> None:
    data = MessageTemplate("Hi\r\nBcc: evil@example.net", HTML, TEXT_PART, config).build(
        recipient(name="Eve\r\nBcc: evil@example.net\n\nbody"), "x@example.com", DATE)
    msg = parse(data)
    assert Counter(msg.keys()) == Counter(BASE_HEADERS | {"Reply-To"})
    assert str(msg["Subject"]) == "Hi Bcc: evil@example.net"
    assert msg["To"].addresses[0].display_name == "Eve Bcc: evil@example.net body"
    assert msg["To"].addresses[0].addr_spec == "alice@example.com"


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=TEXT, subject=TEXT, address=st.emails(), from_name=TEXT)
def test_arbitrary_names_and_subjects_never_add_headers(
    name: str, subject: str, address: str, from_name: str
) -> None:
    config = Settings(from_name=from_name, reply_to="r@example.com")
    template = MessageTemplate(subject, HTML, TEXT_PART, config)
    try:
        data = template.build(recipient(name=name, address=address), "id@example.com", DATE)
    except InputError:
        assert len(address) > 254 or not address.isascii()
        return
    msg = parse(data)
    assert Counter(msg.keys()) == Counter(BASE_HEADERS | {"Reply-To"})
    check_lines(data)
    assert str(msg["Subject"]) == clean_header_text(subject)
    (to,) = msg["To"].addresses
    assert to.addr_spec == address
    # Python's address parser keeps the space between two encoded-words (RFC 2047 §6.2 says
    # to drop it), so compare without spaces; the unstructured Subject is compared exactly.
    assert to.display_name.replace(" ", "") == clean_header_text(name).replace(" ", "")
    assert msg["From"].addresses[0].addr_spec == "digest@example.com"
    plain, _ = msg.iter_parts()
    assert escape(name, "text") in plain.get_content()


@hsettings(max_examples=300, deadline=None)
@given(address=TEXT)
def test_arbitrary_addresses_are_refused_or_used_whole(address: str) -> None:
    template = MessageTemplate("S", HTML, TEXT_PART, Settings())
    try:
        data = template.build(recipient(address=address), "id@example.com", DATE)
    except InputError:
        return
    msg = parse(data)
    assert Counter(msg.keys()) == Counter(BASE_HEADERS)
    assert [a.addr_spec for a in msg["To"].addresses] == [check_address(address)]
    check_lines(data)


@hsettings(max_examples=300, deadline=None)
@given(tail=TEXT)
def test_arbitrary_unsubscribe_urls_are_refused_or_used_whole(tail: str) -> None:
    template = MessageTemplate("S", HTML, TEXT_PART, Settings())
    url = "https://example.com/u/" + tail
    try:
        data = template.build(recipient(url=url), "id@example.com", DATE)
    except InputError:
        return
    msg = parse(data)
    assert Counter(msg.keys()) == Counter(BASE_HEADERS)
    assert str(msg["List-Unsubscribe"]) == f"<{url}>"
    check_lines(data)


# --- quoted-printable splicing


def assert_qp(encoded: bytes, original: bytes) -> None:
    for line in encoded.split(b"\r\n"):
        assert len(line) <= 76
        assert not line.endswith((b" ", b"\t"))
        assert not line.startswith((b".", b"From "))
    assert b"\n" not in encoded.replace(b"\r\n", b"")
    assert binascii.a2b_qp(encoded.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n") == original


@hsettings(max_examples=500, deadline=None)
@given(value=TEXT)
def test_spliced_values_are_valid_quoted_printable(value: str) -> None:
    encoded = mime.qp_value(value)
    if value:
        assert encoded.endswith(b"=\r\n")
    assert_qp(encoded, value.encode("utf-8").replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))


@pytest.mark.parametrize("value", [
    "a" * 75 + ".b",
    "a" * 74 + "=.b",
    "a" * 75 + "From here",
    "a" * 74 + " " + "b" * 10,
    "a" * 75 + " ",
    " " * 200,
    "." + "é" * 60,
    "a" * 73 + "é" + "." * 5,
    "x\ty\t",
])
def test_line_edges_in_spliced_values(value: str) -> None:
    encoded = mime.qp_value(value)
    assert_qp(encoded, value.encode("utf-8"))
    chunk = mime.qp_segment(value + "\n" + value, soft_end=True)
    assert_qp(chunk, (value + "\n" + value).encode("utf-8").replace(b"\n", b"\r\n"))


@hsettings(max_examples=300, deadline=None)
@given(text=TEXT, soft=st.booleans())
def test_literal_chunks_are_valid_quoted_printable(text: str, soft: bool) -> None:
    text = text.replace("\r", "")
    if not soft and not text.endswith("\n"):
        text += "\n"
    encoded = mime.qp_segment(text, soft_end=soft)
    assert_qp(encoded, text.encode("utf-8").replace(b"\n", b"\r\n"))


@hsettings(max_examples=300, deadline=None)
@given(line=st.binary().map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")))
def test_careful_encoder_handles_any_line(line: bytes) -> None:
    out: list[bytes] = []
    mime._qp_careful(line, out)
    assert_qp(b"".join(out), line)


URLISH = st.text(alphabet=st.sampled_from(list(
    "abcXYZ019-._~:/?#[]@!$&'()*+,;=% \t\"<>\\^`{|}éü\x00\r\n"
)))


URL_CHARS = st.text(alphabet=st.sampled_from(list(
    "abcXYZ019-._~:/?#@!$()*+,;=%&'\"<>[] é"
)), max_size=12)


@hsettings(max_examples=1000, deadline=None)
@given(value=TEXT | URLISH | URL_CHARS,
       prefix=st.sampled_from(["", "http://", "https://", "HTTPS://", "https://host",
                               "https://host/", "https://host:80/p?", "mailto:"]))
def test_escape_shortcut_agrees_with_personalise(value: str, prefix: str) -> None:
    value = prefix + value
    for context in ("text", "html", "url"):
        if message_module._UNCHANGED[context].fullmatch(value):
            assert escape(value, context) == value  # type: ignore[arg-type]


# --- configuration


def test_bad_from_email_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="from_email"):
        MessageTemplate("S", HTML, TEXT_PART, Settings(from_email="digest@example.com\r\nX: y"))


def test_bad_reply_to_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="reply_to"):
        MessageTemplate("S", HTML, TEXT_PART, Settings(reply_to="not an address"))


def test_reply_to_may_carry_a_name() -> None:
    template = MessageTemplate("S", HTML, TEXT_PART,
                               Settings(reply_to="Editors <editors@example.com>"))
    msg = parse(template.build(recipient(), "x@example.com", DATE))
    assert msg["Reply-To"].addresses[0] == Address("Editors", addr_spec="editors@example.com")


def test_mailto_with_scheme_and_subject() -> None:
    config = Settings(list_unsubscribe_mailto="mailto:leave@example.com?subject=unsubscribe")
    msg = parse(MessageTemplate("S", HTML, TEXT_PART, config).build(
        recipient(), "x@example.com", DATE))
    assert str(msg["List-Unsubscribe"]).endswith(", <mailto:leave@example.com?subject=unsubscribe>")
    with pytest.raises(ConfigError, match="list_unsubscribe_mailto"):
        MessageTemplate("S", HTML, TEXT_PART,
                        Settings(list_unsubscribe_mailto="a@example.com>, <https://evil"))


def test_bad_list_id_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="list_id"):
        MessageTemplate("S", HTML, TEXT_PART, Settings(list_id="no dots here"))


# --- DKIM


def openssl(*args: str) -> bytes:
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    return subprocess.run(["openssl", *args], check=True, capture_output=True).stdout


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """An RSA-2048 private key file and its DKIM TXT record."""
    path = tmp_path_factory.mktemp("dkim") / "dkim.pem"
    openssl("genrsa", "-out", str(path), "2048")
    public = openssl("rsa", "-in", str(path), "-pubout", "-outform", "DER")
    return path, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def dns(record: bytes, name: bytes = b"sel._domainkey.example.com.") -> Any:
    def lookup(qname: bytes, timeout: int = 5) -> bytes | None:
        return record if qname == name else None
    return lookup


def signed_headers(data: bytes) -> list[str]:
    msg = parse(data)
    tags = dict(
        part.strip().split("=", 1)
        for part in re.sub(r"\s+", "", str(msg["DKIM-Signature"])).split(";") if part
    )
    return tags["h"].split(":")


def test_rsa_signature_verifies_and_covers_the_important_headers(
    rsa_key: tuple[Path, bytes]
) -> None:
    import dkim

    path, record = rsa_key
    config = Settings(dkim_domain="example.com", dkim_selector="sel", dkim_private_key=str(path))
    template = MessageTemplate(SUBJECT, HTML, TEXT_PART, config)
    data = template.build(recipient(name="José"), "x@example.com", DATE)
    assert data.startswith(b"DKIM-Signature: ")
    assert dkim.verify(data, dnsfunc=dns(record))
    covered = set(signed_headers(data))
    assert {"from", "subject", "date", "message-id", "to", "list-unsubscribe",
            "list-unsubscribe-post", "list-id", "mime-version", "content-type"} <= covered
    assert Counter(parse(data).keys()) == Counter(BASE_HEADERS | {"DKIM-Signature"})
    tampered = data.replace(b"Subject: ", b"Subject: Re: ", 1)
    assert not dkim.verify(tampered, dnsfunc=dns(record))
    added = data.replace(b"\r\n\r\n", b"\r\nList-Unsubscribe: <https://evil.example>\r\n\r\n", 1)
    assert not dkim.verify(added, dnsfunc=dns(record))


def test_one_signer_can_serve_several_templates(rsa_key: tuple[Path, bytes]) -> None:
    path, _ = rsa_key
    config = Settings(dkim_domain="example.com", dkim_selector="sel", dkim_private_key=str(path))
    signer = DkimSigner.from_settings(config)
    assert signer is not None
    template = MessageTemplate("S", HTML, TEXT_PART, config, signer=signer)
    assert template.signer is signer
    assert DkimSigner.from_settings(Settings()) is None


def test_ed25519_signature_verifies(tmp_path: Path) -> None:
    pytest.importorskip("nacl.signing", reason="PyNaCl is not installed; dkimpy needs it "
                                              "for ed25519-sha256")
    import dkim
    import nacl.signing

    key = nacl.signing.SigningKey.generate()
    path = tmp_path / "ed25519.key"
    path.write_bytes(base64.b64encode(bytes(key)) + b"\n")
    record = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(bytes(key.verify_key))
    config = Settings(dkim_domain="example.com", dkim_selector="sel",
                      dkim_private_key=str(path), dkim_algorithm="ed25519-sha256")
    data = MessageTemplate(SUBJECT, HTML, TEXT_PART, config).build(
        recipient(), "x@example.com", DATE)
    assert b"a=ed25519-sha256" in data
    assert dkim.verify(data, dnsfunc=dns(record))


def test_ed25519_pem_key_from_openssl(tmp_path: Path) -> None:
    pytest.importorskip("nacl.signing", reason="PyNaCl is not installed; dkimpy needs it "
                                              "for ed25519-sha256")
    import dkim

    path = tmp_path / "ed25519.pem"
    openssl("genpkey", "-algorithm", "ed25519", "-out", str(path))
    public = openssl("pkey", "-in", str(path), "-pubout", "-outform", "DER")[-32:]
    config = Settings(dkim_domain="example.com", dkim_selector="sel",
                      dkim_private_key=str(path), dkim_algorithm="ed25519-sha256")
    data = MessageTemplate("S", HTML, TEXT_PART, config).build(recipient(), "x@example.com")
    record = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(public)
    assert dkim.verify(data, dnsfunc=dns(record))


@pytest.fixture(scope="module")
def ed25519_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """An Ed25519 private key file (PEM, from openssl) and its DKIM TXT record."""
    path = tmp_path_factory.mktemp("dkim") / "ed25519.pem"
    openssl("genpkey", "-algorithm", "ed25519", "-out", str(path))
    public = openssl("pkey", "-in", str(path), "-pubout", "-outform", "DER")[-32:]
    return path, b"v=DKIM1; k=ed25519; p=" + base64.b64encode(public)


def dual_config(rsa_key: tuple[Path, bytes], ed25519_key: tuple[Path, bytes]) -> Settings:
    return Settings(dkim_domain="example.com", dkim_selector="sel",
                    dkim_private_key=str(rsa_key[0]), dkim_ed25519_selector="ed",
                    dkim_ed25519_private_key=str(ed25519_key[0]))


def dual_dns(rsa_key: tuple[Path, bytes], ed25519_key: tuple[Path, bytes]) -> Any:
    records = {b"sel._domainkey.example.com.": rsa_key[1],
               b"ed._domainkey.example.com.": ed25519_key[1]}

    def lookup(qname: bytes, timeout: int = 5) -> bytes | None:
        return records.get(qname)
    return lookup


def verify_every_signature(data: bytes, dnsfunc: Any) -> list[bytes]:
    """The a= of every DKIM-Signature, after dkimpy verified each one."""
    import dkim

    checker = dkim.DKIM(data)
    algorithms = []
    for index, field in enumerate(f for f in parse(data).get_all("DKIM-Signature") or []):
        assert checker.verify(idx=index, dnsfunc=dnsfunc), f"signature {index} fails"
        algorithms.append(re.search(r"a=([\w-]+)", str(field))[1].encode())  # type: ignore[index]
    return algorithms


def test_dual_signing_adds_an_rsa_and_an_ed25519_signature_that_both_verify(
    rsa_key: tuple[Path, bytes], ed25519_key: tuple[Path, bytes]
) -> None:
    """RFC 8463 §3: receivers that know Ed25519 check it, the rest check RSA; both hold."""
    pytest.importorskip("nacl.signing", reason="dkimpy needs PyNaCl to verify ed25519-sha256")
    config = dual_config(rsa_key, ed25519_key)
    data = MessageTemplate(SUBJECT, HTML, TEXT_PART, config).build(recipient(), "x@example.com")
    assert verify_every_signature(data, dual_dns(rsa_key, ed25519_key)) == [
        b"rsa-sha256", b"ed25519-sha256"]
    signer = DkimSigner.from_settings(config)
    assert signer is not None
    assert [name for name, _, _ in signer.public_records()] == [
        "sel._domainkey.example.com", "ed._domainkey.example.com"]


@hsettings(max_examples=30, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=TEXT, subject=TEXT, address=st.emails())
def test_every_signature_verifies_whatever_the_recipient_and_subject(
    rsa_key: tuple[Path, bytes], ed25519_key: tuple[Path, bytes], name: str, subject: str,
    address: str,
) -> None:
    """Folded, encoded and over-long headers canonicalize the same for signer and verifier."""
    pytest.importorskip("nacl.signing", reason="dkimpy needs PyNaCl to verify ed25519-sha256")
    config = dual_config(rsa_key, ed25519_key)
    try:
        data = MessageTemplate(subject, HTML, TEXT_PART, config).build(
            recipient(name=name, address=address), "x@example.com")
    except InputError:
        return  # an address the builder refuses never gets signed
    assert len(verify_every_signature(data, dual_dns(rsa_key, ed25519_key))) == 2


def test_a_body_without_recipient_values_is_hashed_once_and_still_verifies(
    rsa_key: tuple[Path, bytes]
) -> None:
    """The same body for everyone: one body hash per variant, and every message verifies."""
    import dkim

    config = Settings(dkim_domain="example.com", dkim_selector="sel",
                      dkim_private_key=str(rsa_key[0]))
    plain = SplicedTemplate(("Hello reader,\n\nThe news.\n\n\n",), ())
    html = SplicedTemplate(("<p>Hello reader,</p><p>The news.</p>",), ())
    template = MessageTemplate("Same for all", html, plain, config)
    first = template.build(recipient(name="Ann"), "a@example.com")
    second = template.build(recipient(name="Bob", address="bob@example.com"), "b@example.com")
    body_hash = re.compile(rb"bh=([^;]+);")
    assert body_hash.search(first)[1] == body_hash.search(second)[1]  # type: ignore[index]
    assert dkim.verify(first, dnsfunc=dns(rsa_key[1]))
    assert dkim.verify(second, dnsfunc=dns(rsa_key[1]))
    varying = MessageTemplate(SUBJECT, HTML, TEXT_PART, config)
    assert body_hash.search(varying.build(recipient(name="Ann"), "c@example.com"))[1] != \
        body_hash.search(varying.build(recipient(name="Bob"), "d@example.com"))[1]  # type: ignore[index]


def test_dual_signing_needs_both_its_settings(rsa_key: tuple[Path, bytes]) -> None:
    config = Settings(dkim_domain="example.com", dkim_selector="sel",
                      dkim_private_key=str(rsa_key[0]), dkim_ed25519_selector="ed")
    with pytest.raises(ConfigError, match="dkim_ed25519_private_key"):
        DkimSigner.from_settings(config)


@hsettings(max_examples=200, deadline=None)
@given(name=TEXT, text_value=TEXT)
def test_built_messages_need_no_dot_stuffing(name: str, text_value: str) -> None:
    """What the builder marks wire-ready has CRLF line ends only and no line starting with
    ".", so SMTP sends it without a stuffing pass and the receiver gets it unchanged."""
    try:
        message = MessageTemplate(SUBJECT, HTML, TEXT_PART, Settings()).build_outgoing(
            recipient(name="." + name + "\n." + text_value), "x@example.com")
    except InputError:
        return
    assert message.wire_ready
    data = message.data
    assert not data.startswith(b".") and b"\n." not in data
    assert data.count(b"\n") == data.count(b"\r\n") and data.endswith(b"\r\n")


@pytest.mark.parametrize(("changes", "content", "match"), [
    ({"dkim_private_key": "missing.pem"}, None, "dkim_private_key: cannot read"),
    ({"dkim_selector": ""}, b"", "dkim_selector"),
    ({"dkim_domain": ""}, b"", "dkim_domain"),
    ({}, b"not a key", "dkim_private_key .* is not a PEM file"),
    ({}, b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
     "dkim_private_key"),
    ({"dkim_algorithm": "ed25519-sha256"}, b"c2hvcnQ=", "dkim_private_key .* base64 Ed25519 key"),
    ({"dkim_algorithm": "rsa-sha1"}, b"", "dkim_algorithm"),
    ({"dkim_selector": "bad selector"}, b"", "dkim_selector"),
])
def test_dkim_configuration_errors_name_the_setting(
    tmp_path: Path, changes: dict[str, str], content: bytes | None, match: str
) -> None:
    path = tmp_path / "key.pem"
    if content is not None:
        path.write_bytes(content)
    values = {"dkim_domain": "example.com", "dkim_selector": "sel",
              "dkim_private_key": str(path)}
    values.update(changes)
    if changes.get("dkim_private_key") == "missing.pem":
        values["dkim_private_key"] = str(tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match=match):
        DkimSigner.from_settings(Settings(**values))
