"""MIME messages encoded once per issue variant, spliced per recipient, optionally DKIM-signed."""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import format_datetime, parseaddr
from pathlib import Path

from digest.config import Settings
from digest.errors import ConfigError, InputError
from digest.mail.base import OutgoingMessage
from digest.personalise import Context, Recipient, SplicedTemplate, escape

__all__ = [
    "DKIM_ALGORITHMS",
    "DkimSigner",
    "MessageTemplate",
    "check_address",
    "clean_header_text",
    "make_message_id",
]

CRLF = b"\r\n"

# RFC 5322 §2.1.1: lines SHOULD be at most 78 characters (and MUST be at most 998).
_HEADER_LINE = 78
# RFC 2045 §6.7 rule 5: encoded lines at most 76 characters. 75 leaves room for the "=" of a
# soft line break, so every physical line we emit fits whatever terminates it.
_QP_WIDTH = 75
# RFC 2047 §2: an encoded-word is at most 75 characters.
_WORD_MAX = 75
_WORD_OVERHEAD = len("=?utf-8?b??=")
_Q_TOKEN = {char: char for char in
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/"}
_Q_TOKEN[" "] = "_"
_Q_UNSAFE_RE = re.compile(r"[^A-Za-z0-9!*+/ -]")

_ATEXT = "A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_DOT_ATOM = rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*"
_DOMAIN = r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_ADDRESS_RE = re.compile(rf"{_DOT_ATOM}@{_DOMAIN}")
_DNS_NAME_RE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_MSGID_RE = re.compile(rf"{_DOT_ATOM}@{_DOT_ATOM}")
_LIST_ID_RE = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)+")
# A phrase made only of atoms (RFC 5322 §3.2.5) needs neither quoting nor encoding.
_ATOM_PHRASE_RE = re.compile(rf"[ {_ATEXT}]+")
_ATOM_WORD_RE = re.compile(rf"[{_ATEXT}]+")
_PRINTABLE_RE = re.compile(r"[ -~]*")
# A URI in List-Unsubscribe sits inside <...> in a comma-separated list (RFC 2369 §2), so it
# must not contain whitespace, quotes, angle brackets, commas or backslashes.
_HTTP_URI_RE = re.compile(r"https?://[!#-+\--;=?-\[\]-~]+", re.IGNORECASE)
_MAILTO_URI_RE = re.compile(r"mailto:[!#-+\--;=?-\[\]-~]+", re.IGNORECASE)
_MAX_ADDRESS = 254  # RFC 5321 §4.5.3.1.3 (path length less the angle brackets)
_MAX_URI = 900  # keeps "List-Unsubscribe: <...>," under the 998 limit of RFC 5322 §2.1.1

_HEADER_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

# Quoted-printable (RFC 2045 §6.7). Octets that are not printable ASCII, or are "=", become =XX.
# Tab is escaped too, so space is the only whitespace the end-of-line rule has to handle.
_QP_HEX: tuple[bytes, ...] = tuple(b"=%02X" % octet for octet in range(256))
_QP_TOKEN: tuple[bytes, ...] = tuple(
    bytes([octet]) if 32 <= octet <= 126 and octet != 61 else _QP_HEX[octet]
    for octet in range(256)
)
_QP_NEEDS_RE = re.compile(rb"[^ -<>-~]")
_QP_PLAIN_RE = re.compile(rb"[ -<>-~]*")

# Values personalise.escape() returns as they are, so build() can skip calling it: no control
# characters or line breaks; for HTML none of &<>"'; for URLs an absolute http(s) URL made
# only of URL characters. test_message checks escape() really leaves every match alone.
_UNCHANGED: dict[str, re.Pattern[str]] = {
    "text": re.compile(r"[^\x00-\x08\x0a-\x1f\x7f\u2028\u2029]*"),
    "html": re.compile(r"[^\x00-\x08\x0a-\x1f\x7f\u2028\u2029&<>\"']*"),
    "url": re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]+)?(?:[/?#][A-Za-z0-9._~!$()*+,;=:@%/?#-]*)?"),
}

#: The DKIM signature algorithms dkimpy can sign with.
DKIM_ALGORITHMS = ("rsa-sha256", "ed25519-sha256")

# Header fields covered by the signature. Names listed twice are over-signed (RFC 6376 §8.15):
# the extra, absent instance stops anyone adding a second From, To, Subject or unsubscribe
# header after signing.
_DKIM_HEADERS = (
    "from", "reply-to", "to", "subject", "date", "message-id", "list-id",
    "list-unsubscribe", "list-unsubscribe-post", "mime-version", "content-type",
    "from", "reply-to", "to", "subject", "list-unsubscribe", "list-unsubscribe-post",
)

# PKCS#8 wrapper of an Ed25519 private key (RFC 8410 §7): this prefix, then the 32-byte seed.
_ED25519_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")


def make_message_id(domain: str) -> str:
    """A new globally unique Message-ID for domain, without angle brackets."""
    value = f"{uuid.uuid4().hex}@{domain}"
    if not _MSGID_RE.fullmatch(value):
        raise InputError(f"cannot make a Message-ID for domain {domain!r}: use a plain domain name")
    return value


def clean_header_text(value: str) -> str:
    """Header-safe text: control characters and line breaks become spaces; runs collapse."""
    if not value.isascii():
        # Lone surrogates cannot be encoded as UTF-8.
        value = value.encode("utf-8", "replace").decode("utf-8")
    return " ".join(_HEADER_CONTROL_RE.sub(" ", value).split())


def _address_problem(value: str) -> str | None:
    """Why value cannot be used as an address in a header and the envelope, or None."""
    if "\r" in value or "\n" in value:
        return "contains a line break"
    if any(char.isspace() for char in value):
        return "contains whitespace"
    if "<" in value or ">" in value:
        return "contains an angle bracket"
    if "," in value:
        return "contains a comma"
    if len(value) > _MAX_ADDRESS:
        return f"is longer than {_MAX_ADDRESS} characters"
    if not _ADDRESS_RE.fullmatch(value):
        return "is not a plain ASCII address like name@example.com"
    return None


def check_address(value: str) -> str:
    """The address as it goes into headers and the envelope; InputError if it is unsafe."""
    if _ADDRESS_RE.fullmatch(value) and len(value) <= _MAX_ADDRESS:
        return value
    local, at, domain = value.rpartition("@")
    if at and local.isascii() and not domain.isascii() and _address_problem(local + "@x") is None:
        # An internationalised domain travels as its ASCII (IDNA) form; a non-ASCII local part
        # would need SMTPUTF8, which digest does not use.
        try:
            ascii_domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            ascii_domain = domain
        value = f"{local}@{ascii_domain}"
    problem = _address_problem(value)
    if problem:
        raise InputError(f"address {value!r} {problem}; correct it or remove the subscriber")
    return value


def _encoded_words(text: str, first_room: int) -> list[str]:
    """RFC 2047 encoded-words for text, each holding whole characters and fitting its line.

    Q encoding keeps mostly-ASCII text readable; B is shorter for other scripts. The Q
    alphabet is the one RFC 2047 §5(3) allows in a phrase, so the words suit any header.
    """
    tokens = [_Q_TOKEN.get(char) or _q_escape(char) for char in text]
    q_size = sum(len(token) for token in tokens)
    b_size = (len(text.encode("utf-8")) + 2) // 3 * 4
    if q_size > b_size:
        return _b_words(text, first_room)
    words: list[str] = []
    current = ""
    limit = min(first_room, _WORD_MAX) - _WORD_OVERHEAD
    for token in tokens:
        if current and len(current) + len(token) > limit:
            words.append(current)
            current = ""
            limit = min(_HEADER_LINE - 1, _WORD_MAX) - _WORD_OVERHEAD
        current += token
    if current:
        words.append(current)
    return ["=?utf-8?q?" + word + "?=" for word in words]


def _single_word(text: str) -> str:
    """All of text as one encoded-word, Q or B whichever is shorter (length not checked)."""
    q = _Q_UNSAFE_RE.sub(_q_sub, text).replace(" ", "_")
    octets = text.encode("utf-8")
    if len(q) <= (len(octets) + 2) // 3 * 4:
        return "=?utf-8?q?" + q + "?="
    return "=?utf-8?b?" + base64.b64encode(octets).decode("ascii") + "?="


def _q_sub(match: re.Match[str]) -> str:
    return _q_escape(match[0])


def _q_escape(char: str) -> str:
    return "".join(f"={octet:02X}" for octet in char.encode("utf-8"))


def _b_words(text: str, first_room: int) -> list[str]:
    """RFC 2047 B-encoded words, split between characters."""

    def capacity(room: int) -> int:
        return (min(room, _WORD_MAX) - _WORD_OVERHEAD) // 4 * 3

    words: list[bytes] = []
    current = b""
    limit = capacity(first_room)
    for char in text:
        octets = char.encode("utf-8")
        if current and len(current) + len(octets) > limit:
            words.append(current)
            current = b""
            limit = capacity(_HEADER_LINE - 1)  # continuation lines start with one space
        current += octets
    if current:
        words.append(current)
    return ["=?utf-8?b?" + base64.b64encode(word).decode("ascii") + "?=" for word in words]


def _unstructured_header(name: str, text: str) -> bytes:
    """A complete, folded unstructured header (Subject) for already cleaned text."""
    prefix = name + ": "
    if not text:
        return name.encode("ascii") + b":" + CRLF
    # Text containing "=?" is always encoded: otherwise a reader would decode the sender's
    # literal "=?utf-8?q?...?=" as an encoded-word of their choosing.
    if _PRINTABLE_RE.fullmatch(text) and "=?" not in text:
        lines: list[str] = []
        line = name + ":"
        for word in text.split(" "):
            if len(line) + 1 + len(word) > _HEADER_LINE and line != name + ":":
                lines.append(line)
                line = ""
            line += " " + word
        lines.append(line)
        if all(len(each) <= _HEADER_LINE for each in lines):
            return "\r\n".join(lines).encode("ascii") + CRLF
    words = _encoded_words(text, _HEADER_LINE - len(prefix))
    return (prefix + "\r\n ".join(words)).encode("ascii") + CRLF


def _mailbox_header(name: str, display: str, address: str) -> bytes:
    """A complete ``Name: display <address>`` header; display is cleaned, address checked."""
    prefix = name + ": "
    if not display:
        return (prefix + address).encode("ascii") + CRLF
    if display.isascii() and "=?" not in display:
        if _ATOM_PHRASE_RE.fullmatch(display):
            phrase = display
        else:
            phrase = '"' + display.replace("\\", "\\\\").replace('"', '\\"') + '"'
        line = f"{prefix}{phrase} <{address}>"
        if len(line) <= _HEADER_LINE:
            return line.encode("ascii") + CRLF
    if len(display) <= 20:
        word = _single_word(display)
        if len(prefix) + len(word) + len(address) + 3 <= _HEADER_LINE:
            return f"{prefix}{word} <{address}>".encode("ascii") + CRLF
    # Plain words stay atoms and runs of other words become encoded-words (RFC 2047 §5(3)).
    # Folding happens beside an atom where possible: readers must ignore the space between two
    # encoded-words (§6.2), but some (Python's own address parser among them) keep it.
    runs: list[tuple[bool, str]] = []
    for word in display.split(" "):
        plain = len(word) <= 40 and _ATOM_WORD_RE.fullmatch(word) is not None and "=?" not in word
        if not plain and runs and not runs[-1][0]:
            runs[-1] = (False, runs[-1][1] + " " + word)
        else:
            runs.append((plain, word))
    lines: list[str] = []
    line = prefix.rstrip()
    for plain, run in runs:
        if plain:
            atoms = [run]
        else:
            room = _HEADER_LINE - len(line) - 1
            if room < 30:
                lines.append(line)
                line = ""
                room = _HEADER_LINE - 1
            atoms = _encoded_words(run, room)
        for atom in atoms:
            if len(line) + 1 + len(atom) > _HEADER_LINE and line.strip():
                lines.append(line)
                line = ""
            line += " " + atom
    tail = f"<{address}>"
    if len(line) + 1 + len(tail) > _HEADER_LINE:
        lines.append(line)
        line = ""
    lines.append(line + " " + tail)
    return "\r\n".join(lines).encode("ascii") + CRLF


def _list_id_header(phrase: str, list_id: str) -> bytes:
    """``List-Id: phrase <list-id>`` (RFC 2919 §3); the angle brackets are required."""
    if not phrase:
        return b"List-Id: <" + list_id.encode("ascii") + b">\r\n"
    return _mailbox_header("List-Id", phrase, list_id)


def _qp_hex(match: re.Match[bytes]) -> bytes:
    return _QP_HEX[match[0][0]]


def _qp_careful(line: bytes, out: list[bytes]) -> None:
    """Quoted-printable for one line without its end, a token at a time (the general case)."""
    current: list[bytes] = []
    width = 0
    for index, octet in enumerate(line):
        token = _QP_TOKEN[octet]
        # A space may end up last on its physical line, where it has to become =20: reserve room.
        need = len(token) + (2 if octet == 32 else 0)
        if width and width + need > _QP_WIDTH:
            if current[-1] == b" ":
                current[-1] = b"=20"
            out.append(b"".join(current))
            out.append(b"=\r\n")
            current = []
            width = 0
        if not width and (octet == 46 or (octet == 70 and line.startswith(b"From ", index))):
            # "." at the start of a line is what SMTP dot-stuffs (RFC 5321 §4.5.2) and "From "
            # is what mbox files mangle; encoding the first octet sidesteps both.
            token = _QP_HEX[octet]
        current.append(token)
        width += len(token)
    if current:
        if current[-1] == b" ":
            current[-1] = b"=20"
        out.append(b"".join(current))


def _qp_line(line: bytes, out: list[bytes]) -> None:
    """Quoted-printable for one line without its end: lines of at most 75 characters, none
    starting with "." or "From " and none ending in a space (RFC 2045 §6.7 rules 3 and 5)."""
    if not line:
        return
    encoded = line if _QP_PLAIN_RE.fullmatch(line) else _QP_NEEDS_RE.sub(_qp_hex, line)
    if encoded[-1] == 32:
        encoded = encoded[:-1] + b"=20"
    pieces: list[bytes] = []
    start = 0
    size = len(encoded)
    while size - start > _QP_WIDTH:
        end = start + _QP_WIDTH
        # Never split an =XX escape: "=" only ever starts one.
        if encoded[end - 1] == 61:
            end -= 1
        elif encoded[end - 2] == 61:
            end -= 2
        # Keep the space for the next line rather than leave it before the soft break.
        while encoded[end - 1] == 32 and end - 1 > start:
            end -= 1
        pieces.append(encoded[start:end])
        start = end
    pieces.append(encoded[start:])
    for piece in pieces:
        if piece[0] == 46 or piece[-1] == 32 or piece.startswith(b"From "):
            _qp_careful(line, out)
            return
    out.append(b"=\r\n".join(pieces))


def _qp_segment(text: str, soft_end: bool) -> bytes:
    """Quoted-printable for text that starts at the beginning of a line. With soft_end, a final
    partial line ends in a soft line break so the next segment continues the same line."""
    data = text.encode("utf-8", "replace")
    lines = data.split(b"\n") if b"\n" in data else [data]
    out: list[bytes] = []
    last = len(lines) - 1
    for number, line in enumerate(lines):
        if number < last:
            _qp_line(line, out)
            out.append(CRLF)
        elif line:
            _qp_line(line, out)
            out.append(b"=\r\n" if soft_end else CRLF)
    return b"".join(out)


def _qp_value(value: str) -> bytes:
    """Quoted-printable for one spliced value, ending in a soft line break."""
    if not value:
        return b""
    data = value.encode("utf-8", "replace")
    if (
        len(data) <= _QP_WIDTH
        and _QP_PLAIN_RE.fullmatch(data)
        and data[-1] != 32
        and data[0] != 46
        and not data.startswith(b"From ")
    ):
        return data + b"=\r\n"
    if b"\r" not in data and b"\n" not in data:
        # binascii does the encoding in C; its lines are at most 76 characters counting a
        # soft break, and every "=" it writes starts an escape or a soft break.
        encoded = binascii.b2a_qp(data)
        if b"\n" in encoded:
            encoded = encoded.replace(b"=\n", b"=\r\n")
        if (
            len(encoded) - encoded.rfind(b"\n") <= _QP_WIDTH + 1  # room for our "="
            and encoded[0] != 46
            and not encoded.startswith(b"From ")
            and b"\n." not in encoded
            and b"\nFrom " not in encoded
        ):
            return encoded + b"=\r\n"
    out: list[bytes] = []
    for number, line in enumerate(data.replace(b"\r\n", b"\n").split(b"\n")):
        if number:
            out.append(CRLF)
        _qp_line(line, out)
    out.append(b"=\r\n")
    return b"".join(out)


def _unsubscribe_uri(url: str) -> str:
    """The recipient's one-click unsubscribe URL, checked for use inside a header."""
    if len(url) > _MAX_URI or not url.isascii() or not _HTTP_URI_RE.fullmatch(url):
        raise InputError(
            f"unsubscribe URL {url!r} cannot go in a List-Unsubscribe header: it must be an "
            f"http(s) URL of at most {_MAX_URI} ASCII characters without spaces, quotes, "
            "angle brackets or commas; check base_url and the link token"
        )
    return url


def _settings_address(settings: Settings, field: str) -> tuple[str, str]:
    """(display name, address) from an address setting; ConfigError names the setting."""
    raw = getattr(settings, field)
    name, address = "", raw.strip()
    if "<" in address:
        name, address = parseaddr(address)
    problem = _address_problem(address)
    if problem:
        raise ConfigError(f"{field} {raw!r} {problem}; set {field} to an address like "
                          "news@example.com")
    return clean_header_text(name), address


class DkimSigner:
    """Signs finished messages with one private key, loaded once (RFC 6376, RFC 8463)."""

    def __init__(self, domain: str, selector: str, private_key: bytes,
                 algorithm: str = "rsa-sha256", *, source: str = "") -> None:
        if algorithm not in DKIM_ALGORITHMS:
            raise ConfigError(
                f"dkim_algorithm {algorithm!r} must be one of {', '.join(DKIM_ALGORITHMS)}"
            )
        self.domain = domain.encode("ascii")
        self.selector = selector.encode("ascii")
        self.algorithm = algorithm.encode("ascii")
        self._key = private_key
        self._source = source
        self._headers = [name.encode("ascii") for name in _DKIM_HEADERS]
        # One trial signature proves the key parses (and that PyNaCl is there for Ed25519)
        # before the first real message is built.
        self.sign(b"From: check@example.com\r\nSubject: key check\r\n\r\ncheck\r\n")

    @classmethod
    def from_settings(cls, settings: Settings) -> DkimSigner | None:
        """The signer the settings ask for, or None when DKIM is not configured."""
        fields = ("dkim_domain", "dkim_selector", "dkim_private_key")
        values = {field: getattr(settings, field).strip() for field in fields}
        if not any(values.values()):
            return None
        missing = [field for field in fields if not values[field]]
        if missing:
            raise ConfigError(
                f"DKIM signing needs {', '.join(missing)} as well: set "
                f"{' and '.join(missing)}, or clear {', '.join(f for f in fields if values[f])} "
                "to send unsigned"
            )
        for field in ("dkim_domain", "dkim_selector"):
            if not _DNS_NAME_RE.fullmatch(values[field]):
                raise ConfigError(f"{field} {values[field]!r} is not a plain DNS name")
        algorithm = settings.dkim_algorithm.strip().lower()
        if algorithm not in DKIM_ALGORITHMS:
            raise ConfigError(
                f"dkim_algorithm {settings.dkim_algorithm!r} must be one of "
                f"{', '.join(DKIM_ALGORITHMS)}"
            )
        path = Path(values["dkim_private_key"]).expanduser()
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"dkim_private_key: cannot read {path} ({exc.strerror or exc}); set "
                "dkim_private_key to the path of the private key file"
            ) from None
        key = _load_key(raw, algorithm, path)
        return cls(values["dkim_domain"], values["dkim_selector"], key, algorithm,
                   source=str(path))

    def sign(self, message: bytes) -> bytes:
        """The message with a DKIM-Signature header prepended."""
        import dkim

        try:
            signature: bytes = dkim.sign(
                message,
                self.selector,
                self.domain,
                self._key,
                # Simple body canonicalization: the body is 7-bit quoted-printable with short
                # lines and no trailing spaces, so there is nothing for relaxed to forgive, and
                # dkimpy's relaxed body pass costs more than the RSA signature itself.
                canonicalize=(b"relaxed", b"simple"),
                signature_algorithm=self.algorithm,
                include_headers=self._headers,
            )
        except dkim.NaClNotFoundError:
            raise ConfigError(
                "ed25519-sha256 signing needs the PyNaCl package: install it "
                "(pip install pynacl) or set dkim_algorithm = \"rsa-sha256\""
            ) from None
        except dkim.KeyFormatError as exc:
            raise ConfigError(
                f"dkim_private_key {self._source or '(given key)'} is not a valid "
                f"{self.algorithm.decode()} private key ({exc}); set dkim_private_key to the "
                "right file"
            ) from None
        return signature + message


def _load_key(raw: bytes, algorithm: str, path: Path) -> bytes:
    """The key bytes dkimpy wants: PEM for RSA, base64 of the 32-byte seed for Ed25519."""
    # dkimpy finds the PEM body with a "\n"-only pattern.
    raw = raw.replace(b"\r\n", b"\n").strip()
    if algorithm == "rsa-sha256":
        if b"-----BEGIN" not in raw:
            raise ConfigError(
                f"dkim_private_key {path} is not a PEM file; set dkim_private_key to an RSA "
                "private key in PEM form (openssl genrsa -out dkim.pem 2048)"
            )
        return raw + b"\n"
    if b"-----BEGIN" in raw:
        body = b"".join(line for line in raw.splitlines() if not line.startswith(b"-----"))
        try:
            der = base64.b64decode(body, validate=True)
        except binascii.Error:
            der = b""
        if len(der) != 48 or not der.startswith(_ED25519_PKCS8_PREFIX):
            raise ConfigError(
                f"dkim_private_key {path} is not an Ed25519 private key; set "
                "dkim_private_key to one (openssl genpkey -algorithm ed25519)"
            )
        return base64.b64encode(der[len(_ED25519_PKCS8_PREFIX):])
    try:
        seed = base64.b64decode(raw, validate=True)
    except binascii.Error:
        seed = b""
    if len(seed) != 32:
        raise ConfigError(
            f"dkim_private_key {path} does not hold a base64 Ed25519 key (32 bytes); set "
            "dkim_private_key to the file dknewkey --ktype ed25519 wrote, or a PEM key"
        )
    return raw


class MessageTemplate:
    """One issue variant's message, encoded once; :meth:`build` splices one recipient in."""

    def __init__(
        self,
        subject: str,
        html: SplicedTemplate,
        text: SplicedTemplate,
        settings: Settings,
        *,
        signer: DkimSigner | None = None,
    ) -> None:
        self.settings = settings
        self.subject = clean_header_text(subject)
        self.sender = _settings_address(settings, "from_email")[1]
        self.signer = signer if signer is not None else DkimSigner.from_settings(settings)
        self._date_cache: tuple[int, bytes] = (-1, b"")

        mailto = settings.list_unsubscribe_mailto.strip()
        if mailto:
            if not mailto.lower().startswith("mailto:"):
                mailto = "mailto:" + mailto
            if len(mailto) > _MAX_URI or not _MAILTO_URI_RE.fullmatch(mailto):
                raise ConfigError(
                    f"list_unsubscribe_mailto {settings.list_unsubscribe_mailto!r} is not a "
                    "usable mailto URI; set it to an address like unsubscribe@example.com"
                )
            self._unsubscribe_tail = b">,\r\n <" + mailto.encode("ascii") + b">\r\n"
        else:
            self._unsubscribe_tail = b">\r\n"

        list_id = settings.effective_list_id.strip()
        if not _LIST_ID_RE.fullmatch(list_id) or len(list_id) > 255:
            raise ConfigError(
                f"list_id {list_id!r} must look like a domain name, e.g. weekly.example.com "
                "(RFC 2919)"
            )

        text_chunks = self._encode_chunks(text)
        html_chunks = self._encode_chunks(html)
        boundary = self._boundary(text_chunks + html_chunks)

        from_name, from_address = _settings_address(settings, "from_email")
        header_from = _mailbox_header("From", clean_header_text(settings.from_name) or from_name,
                                      from_address)
        if settings.reply_to.strip():
            reply_name, reply_address = _settings_address(settings, "reply_to")
            header_from += _mailbox_header("Reply-To", reply_name, reply_address)
        part = b"Content-Type: text/%s; charset=\"utf-8\"\r\n" \
               b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        delimiter = b"\r\n--" + boundary + CRLF

        # The message alternates constant bytes with holes; a hole is a header or a slot key.
        pieces: list[bytes | str | tuple[str, Context]] = [
            header_from,
            "to",
            _unstructured_header("Subject", self.subject),
            "date",
            "message-id",
            _list_id_header(clean_header_text(settings.newsletter_name), list_id),
            "list-unsubscribe",
            # RFC 8058 §3.1: one-click unsubscribe by POST to the List-Unsubscribe https URI.
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
            # Precedence is non-standard (RFC 2076), but Google's older bulk-sender guidelines
            # asked for it and vacation responders still skip "bulk" mail (RFC 3834 §2). No
            # Auto-Submitted: RFC 3834 §5 means it for machine-generated notices, not an
            # edited newsletter its readers may answer.
            b"Precedence: bulk\r\n"
            b"MIME-Version: 1.0\r\n"
            b"Content-Type: multipart/alternative;\r\n boundary=\"" + boundary + b"\"\r\n"
            b"\r\n--" + boundary + CRLF + part % b"plain",
        ]
        self._slot_keys: list[tuple[str, Context]] = []
        for chunks, template, after in (
            (text_chunks, text, delimiter + part % b"html"),
            (html_chunks, html, b"\r\n--" + boundary + b"--\r\n"),
        ):
            pieces.append(chunks[0])
            for slot, chunk in zip(template.slots, chunks[1:], strict=True):
                pieces.append(slot)
                if slot not in self._slot_keys:
                    self._slot_keys.append(slot)
                pieces.append(chunk)
            pieces.append(after)

        skeleton: list[bytes] = [b""]
        holes: list[tuple[int, str | tuple[str, Context]]] = []
        for piece in pieces:
            if isinstance(piece, bytes):
                skeleton[-1] += piece
            else:
                holes.append((len(skeleton), piece))
                skeleton += [b"", b""]
        self._skeleton = skeleton
        positions = {key: index for index, key in holes if isinstance(key, str)}
        self._header_holes = tuple(
            positions[key] for key in ("to", "date", "message-id", "list-unsubscribe")
        )
        self._slot_plan = [
            (field, context, _UNCHANGED[context].fullmatch) for field, context in self._slot_keys
        ]
        self._slot_holes = [
            (index, self._slot_keys.index(key)) for index, key in holes if not isinstance(key, str)
        ]
        self.boundary = boundary.decode("ascii")

    @staticmethod
    def _encode_chunks(template: SplicedTemplate) -> list[bytes]:
        """Each literal chunk as quoted-printable, all but the last ending in a soft break."""
        chunks = [chunk.replace("\r\n", "\n").replace("\r", "\n") for chunk in template.chunks]
        if not chunks[-1].endswith("\n"):
            chunks[-1] += "\n"  # a text part ends with a line break, as the stdlib's does
        last = len(chunks) - 1
        return [_qp_segment(chunk, soft_end=n < last) for n, chunk in enumerate(chunks)]

    @staticmethod
    def _boundary(chunks: Sequence[bytes]) -> bytes:
        """A random boundary found in no chunk (RFC 2046 §5.1.1)."""
        while True:
            # "=_" cannot occur in quoted-printable (every "=" starts =XX or a soft break), so
            # the check below is a second line of defence, not the only one.
            boundary = b"=_digest_" + secrets.token_hex(16).encode("ascii")
            if not any(boundary in chunk for chunk in chunks):
                return boundary

    def _date(self, date: datetime | None) -> bytes:
        if date is None:
            now = int(time.time())
            cached = self._date_cache
            if cached[0] == now:
                return cached[1]
            value = b"Date: " + format_datetime(datetime.fromtimestamp(now, UTC)).encode() + CRLF
            self._date_cache = (now, value)
            return value
        if date.tzinfo is None:
            date = date.replace(tzinfo=UTC)
        return b"Date: " + format_datetime(date).encode("ascii") + CRLF

    def build(self, recipient: Recipient, message_id: str, date: datetime | None = None) -> bytes:
        """The complete message for one recipient (CRLF line ends), signed if DKIM is set."""
        return self._build(recipient, check_address(recipient.email), message_id, date)

    def _build(
        self, recipient: Recipient, address: str, message_id: str, date: datetime | None
    ) -> bytes:
        if len(message_id) > 250 or not _MSGID_RE.fullmatch(message_id):
            raise InputError(
                f"Message-ID {message_id!r} is not of the form local@domain; "
                "use make_message_id()"
            )
        out = self._skeleton.copy()
        to_at, date_at, id_at, unsubscribe_at = self._header_holes
        out[to_at] = _mailbox_header("To", clean_header_text(recipient.name), address)
        out[date_at] = self._date(date)
        out[id_at] = b"Message-ID: <" + message_id.encode("ascii") + b">\r\n"
        out[unsubscribe_at] = (
            b"List-Unsubscribe: <"
            + _unsubscribe_uri(recipient.unsubscribe_url).encode("ascii")
            + self._unsubscribe_tail
        )
        # A URL usually escapes the same for HTML and text: encode each distinct value once.
        encoded: dict[str, bytes] = {}
        values = []
        for field, context, unchanged in self._slot_plan:
            raw = getattr(recipient, field)
            value = raw if unchanged(raw) else escape(raw, context)
            qp = encoded.get(value)
            if qp is None:
                qp = encoded[value] = _qp_value(value)
            values.append(qp)
        for index, key in self._slot_holes:
            out[index] = values[key]
        data = b"".join(out)
        if self.signer is not None:
            data = self.signer.sign(data)
        return data

    def build_outgoing(
        self, recipient: Recipient, message_id: str, date: datetime | None = None
    ) -> OutgoingMessage:
        """The message for one recipient with its envelope (MAIL FROM is from_email)."""
        address = check_address(recipient.email)
        return OutgoingMessage(
            message_id=message_id,
            sender=self.sender,
            recipient=address,
            data=self._build(recipient, address, message_id, date),
        )
