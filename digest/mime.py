"""RFC 5322/2047/2045 encoding: header fields, addresses, Message-IDs and quoted-printable."""

from __future__ import annotations

import base64
import binascii
import re
import uuid

from digest.errors import InputError

__all__ = [
    "CRLF",
    "LIST_ID_RE",
    "MAILTO_URI_RE",
    "MAX_URI",
    "MSGID_RE",
    "address_problem",
    "check_address",
    "clean_header_text",
    "list_id_header",
    "mailbox_header",
    "make_message_id",
    "qp_segment",
    "qp_value",
    "unstructured_header",
    "unsubscribe_uri",
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
MSGID_RE = re.compile(rf"{_DOT_ATOM}@{_DOT_ATOM}")
LIST_ID_RE = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)+")
# A phrase made only of atoms (RFC 5322 §3.2.5) needs neither quoting nor encoding.
_ATOM_PHRASE_RE = re.compile(rf"[ {_ATEXT}]+")
_ATOM_WORD_RE = re.compile(rf"[{_ATEXT}]+")
_PRINTABLE_RE = re.compile(r"[ -~]*")
# A URI in List-Unsubscribe sits inside <...> in a comma-separated list (RFC 2369 §2), so it
# must not contain whitespace, quotes, angle brackets, commas or backslashes.
_HTTP_URI_RE = re.compile(r"https?://[!#-+\--;=?-\[\]-~]+", re.IGNORECASE)
MAILTO_URI_RE = re.compile(r"mailto:[!#-+\--;=?-\[\]-~]+", re.IGNORECASE)
_MAX_ADDRESS = 254  # RFC 5321 §4.5.3.1.3 (path length less the angle brackets)
MAX_URI = 900  # keeps "List-Unsubscribe: <...>," under the 998 limit of RFC 5322 §2.1.1

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


def make_message_id(domain: str) -> str:
    """A new globally unique Message-ID for domain, without angle brackets."""
    value = f"{uuid.uuid4().hex}@{domain}"
    if not MSGID_RE.fullmatch(value):
        raise InputError(f"cannot make a Message-ID for domain {domain!r}: use a plain domain name")
    return value


def clean_header_text(value: str) -> str:
    """Header-safe text: control characters and line breaks become spaces; runs collapse."""
    if not value.isascii():
        # Lone surrogates cannot be encoded as UTF-8.
        value = value.encode("utf-8", "replace").decode("utf-8")
    return " ".join(_HEADER_CONTROL_RE.sub(" ", value).split())


def address_problem(value: str) -> str | None:
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
    if at and local.isascii() and not domain.isascii() and address_problem(local + "@x") is None:
        # An internationalised domain travels as its ASCII (IDNA) form; a non-ASCII local part
        # would need SMTPUTF8, which digest does not use.
        try:
            ascii_domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            ascii_domain = domain
        value = f"{local}@{ascii_domain}"
    problem = address_problem(value)
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


def unstructured_header(name: str, text: str) -> bytes:
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


def mailbox_header(name: str, display: str, address: str) -> bytes:
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


def list_id_header(phrase: str, list_id: str) -> bytes:
    """``List-Id: phrase <list-id>`` (RFC 2919 §3); the angle brackets are required."""
    if not phrase:
        return b"List-Id: <" + list_id.encode("ascii") + b">\r\n"
    return mailbox_header("List-Id", phrase, list_id)


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


def qp_segment(text: str, soft_end: bool) -> bytes:
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


def qp_value(value: str) -> bytes:
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


def unsubscribe_uri(url: str) -> str:
    """The recipient's one-click unsubscribe URL, checked for use inside a header."""
    if len(url) > MAX_URI or not url.isascii() or not _HTTP_URI_RE.fullmatch(url):
        raise InputError(
            f"unsubscribe URL {url!r} cannot go in a List-Unsubscribe header: it must be an "
            f"http(s) URL of at most {MAX_URI} ASCII characters without spaces, quotes, "
            "angle brackets or commas; check base_url and the link token"
        )
    return url
