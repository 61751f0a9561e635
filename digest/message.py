"""MIME messages encoded once per issue variant, spliced per recipient, optionally DKIM-signed.

This is the one builder every outgoing mail goes through. Header and quoted-printable encoding
live in digest.mime and signing in digest.dkim; their public names are re-exported here.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import format_datetime, parseaddr

from digest.config import Settings
from digest.dkim import DKIM_ALGORITHMS, DkimSigner, body_hash
from digest.errors import ConfigError, InputError
from digest.list_headers import feedback_id, list_archive_url, unsubscribe_mailto
from digest.mail.base import OutgoingMessage
from digest.mime import (
    CRLF,
    LIST_ID_RE,
    MSGID_RE,
    address_problem,
    check_address,
    clean_header_text,
    list_id_header,
    mailbox_header,
    make_message_id,
    qp_segment,
    qp_value,
    unstructured_header,
    unsubscribe_uri,
)
from digest.personalise import Context, Recipient, SplicedTemplate, escape
from digest.verp import envelope_sender, require_usable

__all__ = [
    "DKIM_ALGORITHMS",
    "DkimSigner",
    "MessageTemplate",
    "check_address",
    "clean_header_text",
    "make_message_id",
]

# Values personalise.escape() returns as they are, so build() can skip calling it: no control
# characters or line breaks; for HTML none of &<>"'; for URLs an absolute http(s) URL made
# only of URL characters. test_message checks escape() really leaves every match alone.
_UNCHANGED: dict[str, re.Pattern[str]] = {
    "text": re.compile(r"[^\x00-\x08\x0a-\x1f\x7f\u2028\u2029]*"),
    "html": re.compile(r"[^\x00-\x08\x0a-\x1f\x7f\u2028\u2029&<>\"']*"),
    "url": re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]+)?(?:[/?#][A-Za-z0-9._~!$()*+,;=:@%/?#-]*)?"),
}


def _settings_address(settings: Settings, field: str) -> tuple[str, str]:
    """(display name, address) from an address setting; ConfigError names the setting."""
    raw = getattr(settings, field)
    name, address = "", raw.strip()
    if "<" in address:
        name, address = parseaddr(address)
    problem = address_problem(address)
    if problem:
        raise ConfigError(f"{field} {raw!r} {problem}; set {field} to an address like "
                          "news@example.com")
    return clean_header_text(name), address


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
        issue: str = "",
    ) -> None:
        self.settings = settings
        self.subject = clean_header_text(subject)
        _settings_address(settings, "from_email")
        # The envelope sender: bounce_address (VERP per delivery, see build_outgoing) or From.
        require_usable(settings)
        self.sender = envelope_sender(settings)
        self.signer = signer if signer is not None else DkimSigner.from_settings(settings)
        self._date_cache: tuple[int, bytes] = (-1, b"")
        self._body_hash: bytes | None = None

        mailto = unsubscribe_mailto(settings)
        if mailto:
            self._unsubscribe_tail = b">,\r\n <" + mailto.encode("ascii") + b">\r\n"
        else:
            self._unsubscribe_tail = b">\r\n"
        # Both are checked values of safe ASCII (list_headers), constant for the variant.
        list_headers = b"List-Archive: <" + list_archive_url(settings).encode("ascii") + b">\r\n"
        feedback = feedback_id(settings, issue) if issue else ""
        if feedback:
            list_headers += b"Feedback-ID: " + feedback.encode("ascii") + CRLF

        list_id = settings.effective_list_id.strip()
        if not LIST_ID_RE.fullmatch(list_id) or len(list_id) > 255:
            raise ConfigError(
                f"list_id {list_id!r} must look like a domain name, e.g. weekly.example.com "
                "(RFC 2919)"
            )

        text_chunks = self._encode_chunks(text)
        html_chunks = self._encode_chunks(html)
        boundary = self._boundary(text_chunks + html_chunks)

        from_name, from_address = _settings_address(settings, "from_email")
        header_from = mailbox_header("From", clean_header_text(settings.from_name) or from_name,
                                      from_address)
        if settings.reply_to.strip():
            reply_name, reply_address = _settings_address(settings, "reply_to")
            header_from += mailbox_header("Reply-To", reply_name, reply_address)
        part = b"Content-Type: text/%s; charset=\"utf-8\"\r\n" \
               b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        delimiter = b"\r\n--" + boundary + CRLF

        # The message alternates constant bytes with holes; a hole is a header or a slot key.
        pieces: list[bytes | str | tuple[str, Context]] = [
            header_from,
            "to",
            unstructured_header("Subject", self.subject),
            "date",
            "message-id",
            list_id_header(clean_header_text(settings.newsletter_name), list_id),
            "list-unsubscribe",
            # RFC 8058 §3.1: one-click unsubscribe by POST to the List-Unsubscribe https URI.
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
            list_headers,
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
        return [qp_segment(chunk, soft_end=n < last) for n, chunk in enumerate(chunks)]

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
        if len(message_id) > 250 or not MSGID_RE.fullmatch(message_id):
            raise InputError(
                f"Message-ID {message_id!r} is not of the form local@domain; "
                "use make_message_id()"
            )
        out = self._skeleton.copy()
        to_at, date_at, id_at, unsubscribe_at = self._header_holes
        out[to_at] = mailbox_header("To", clean_header_text(recipient.name), address)
        out[date_at] = self._date(date)
        out[id_at] = b"Message-ID: <" + message_id.encode("ascii") + b">\r\n"
        out[unsubscribe_at] = (
            b"List-Unsubscribe: <"
            + unsubscribe_uri(recipient.unsubscribe_url).encode("ascii")
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
                qp = encoded[value] = qp_value(value)
            values.append(qp)
        for index, key in self._slot_holes:
            out[index] = values[key]
        data = b"".join(out)
        if self.signer is not None:
            data = self.signer.sign(data, body_hash_value=self._constant_body_hash(data))
        return data

    def _constant_body_hash(self, data: bytes) -> bytes | None:
        """The DKIM body hash, computed once, when no recipient value lands in the body."""
        if self._slot_holes:
            return None  # the body differs per recipient: the signer hashes each one
        if self._body_hash is None:
            self._body_hash = body_hash(memoryview(data)[data.index(b"\r\n\r\n") + 4:])
        return self._body_hash

    def build_outgoing(
        self, recipient: Recipient, message_id: str, date: datetime | None = None, *,
        delivery_id: int | None = None,
    ) -> OutgoingMessage:
        """The message for one recipient with its envelope.

        MAIL FROM is bounce_address (else from_email); with ``verp`` on and a delivery id it
        is that delivery's signed VERP address, so its bounce names the delivery.
        """
        address = check_address(recipient.email)
        sender = self.sender
        if delivery_id is not None and self.settings.verp:
            sender = envelope_sender(self.settings, delivery_id)
        return OutgoingMessage(
            message_id=message_id,
            sender=sender,
            recipient=address,
            data=self._build(recipient, address, message_id, date),
            # Quoted-printable never starts a line with "." (qp_segment and qp_value encode
            # it as =2E) and folded headers start with a space, so no line needs stuffing.
            wire_ready=True,
        )
