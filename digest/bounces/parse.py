"""Read a bounce or complaint: RFC 3464 delivery-status, RFC 5965 ARF, else flufl.bounce.

The result says, per reported recipient, what kind of failure it was, with its status code
and diagnostic text, and lists what could tie the report to one delivery: the addresses it
was sent to (where a VERP envelope sender ends up) and the original message's Message-IDs.
A message that is none of these is not a report: :func:`parse` returns None, and the caller
keeps it for a person to read.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.parser import HeaderParser
from email.utils import getaddresses

from flufl.bounce import all_failures

from digest.models import BounceKind
from digest.sending.policy import is_bounce

# RFC 3463 §3.3 X.1.x: 5.1.1 bad mailbox, 5.1.2 bad domain, 5.1.3 bad syntax, 5.1.6 moved,
# 5.1.10 null MX (RFC 7505). The same set sending.policy uses for replies at RCPT.
_BAD_MAILBOX = frozenset({1, 2, 3, 6, 10})
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_MESSAGE_ID = re.compile(r"(?im)^message-id:[ \t]*<([^<>\s]{3,250})>")
_SMTP_REPLY = re.compile(r"\b[45]\d\d[ -]")
#: ARF feedback types that are a reader saying "this is spam" (RFC 5965 §7.3).
_COMPLAINT_TYPES = frozenset({"abuse", "fraud", "other"})
# Where a report names the address it was sent to: the VERP envelope sender of the original.
_ENVELOPE_HEADERS = ("To", "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To")
_MAX_DIAGNOSTIC = 1000


@dataclass(frozen=True, slots=True)
class Recipient:
    """One recipient a report is about."""

    email: str  # "" when the report withholds it (complaints are often redacted)
    kind: BounceKind
    status: str  # RFC 3463 code such as "5.1.1", or ""
    diagnostic: str


@dataclass(frozen=True, slots=True)
class Report:
    """A parsed bounce or complaint."""

    format: str  # "dsn", "arf" or "heuristic" (flufl.bounce)
    recipients: tuple[Recipient, ...]
    sent_to: tuple[str, ...]  # addresses the report was addressed to, and the original's sender
    message_ids: tuple[str, ...]  # Message-IDs of the original message, without brackets
    subject: str


def parse(raw: bytes) -> Report | None:
    """The report in a raw message, or None if it is not a bounce or a complaint."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    if not message.keys():
        return None
    subject = _clean(str(message.get("Subject", "")))[:200]
    sent_to = _addresses(message.get_all(name) or [] for name in _ENVELOPE_HEADERS)
    message_ids = _message_ids(message.walk())

    feedback = _first(message, "message/feedback-report")
    if feedback is not None:
        return _arf(feedback, message, sent_to, message_ids, subject)
    status = _first(message, "message/delivery-status")
    if status is not None:
        recipients = _dsn(status)
        if recipients is not None:
            return Report("dsn", recipients, sent_to, message_ids, subject)
    return _heuristic(message, sent_to, message_ids, subject)


def classify(action: str, status: str, diagnostic: str) -> BounceKind:
    """The kind of one failed recipient, from its DSN Action, Status and Diagnostic-Code.

    A Status of X.0.0 says nothing more than its class, so a more specific code in the
    diagnostic text (``smtp; 550 5.1.1 user unknown``) wins over it.
    """
    if action.strip().lower() == "delayed":
        return BounceKind.DELAYED
    code = _best_code(status, diagnostic)
    if code is not None:
        klass, subject, detail = code
        if klass == 5 and subject == 1 and detail in _BAD_MAILBOX:
            return BounceKind.HARD
        if subject == 7:
            return BounceKind.POLICY
        return BounceKind.SOFT
    if is_bounce(550, diagnostic):
        return BounceKind.HARD
    return BounceKind.SOFT


# --- the three readers -----------------------------------------------------------------------


def _dsn(status_part: email.message.Message) -> tuple[Recipient, ...] | None:
    """Recipients of an RFC 3464 delivery-status part; None if it has no per-recipient field."""
    blocks = _status_blocks(status_part)
    recipients = []
    found = False
    for block in blocks:
        address = _typed_address(block.get("Final-Recipient") or block.get("Original-Recipient"))
        action = _clean(str(block.get("Action", ""))).lower()
        if not address and not action:
            continue  # the per-message block (Reporting-MTA, Arrival-Date, …)
        found = True
        if action in ("delivered", "relayed", "expanded"):
            continue  # a success notice: nothing to do
        status = _status_code(str(block.get("Status", "")))
        diagnostic = _clean(str(block.get("Diagnostic-Code", "")))
        diagnostic = re.sub(r"^[A-Za-z0-9-]+;\s*", "", diagnostic)[:_MAX_DIAGNOSTIC]
        kind = classify(action or "failed", status, diagnostic)
        recipients.append(Recipient(address, kind, _best_status(status, diagnostic), diagnostic))
    return tuple(recipients) if found else None


def _arf(
    feedback: email.message.Message, message: email.message.Message,
    sent_to: tuple[str, ...], message_ids: tuple[str, ...], subject: str,
) -> Report:
    """An RFC 5965 feedback report: a complaint about the original message's recipient."""
    fields = _fields(feedback)
    feedback_type = _clean(str(fields.get("Feedback-Type", ""))).lower()
    original = _original(message)
    # Original-Mail-From is the original's envelope sender: where a VERP address survives.
    mail_from = _addresses([fields.get_all("Original-Mail-From") or []])
    if original is not None:
        mail_from += _addresses([original.get_all("Return-Path") or []])
    rcpt = _addresses([fields.get_all("Original-Rcpt-To") or []])
    if not rcpt and original is not None:
        rcpt = _addresses([original.get_all("To") or []])
    recipients: tuple[Recipient, ...] = ()
    if feedback_type in _COMPLAINT_TYPES:
        detail = f"Feedback-Type: {feedback_type}"
        agent = _clean(str(fields.get("User-Agent", "")))
        if agent:
            detail += f"; User-Agent: {agent}"
        recipients = tuple(
            Recipient(address, BounceKind.COMPLAINT, "", detail[:_MAX_DIAGNOSTIC])
            for address in (rcpt or ("",))
        )
    return Report("arf", recipients, sent_to + mail_from, message_ids, subject)


def _heuristic(
    message: email.message.Message, sent_to: tuple[str, ...], message_ids: tuple[str, ...],
    subject: str,
) -> Report | None:
    """A non-standard bounce, read by flufl.bounce's detectors (Mailman's)."""
    try:
        temporary, permanent = all_failures(message)
    except Exception:  # a detector choking on odd input means "not recognised", not a crash
        return None
    if not temporary and not permanent:
        return None
    body = "\n".join(_text(part) for part in message.walk()
                     if part.get_content_maintype() == "text")
    recipients = []
    for address in sorted(permanent):
        email_address = address.decode("utf-8", "replace")
        diagnostic = _diagnostic_near(body, email_address)
        status = _best_status("", diagnostic)
        recipients.append(Recipient(email_address, classify("failed", status, diagnostic),
                                    status, diagnostic))
    for address in sorted(temporary - permanent):
        email_address = address.decode("utf-8", "replace")
        diagnostic = _diagnostic_near(body, email_address)
        recipients.append(Recipient(email_address, BounceKind.DELAYED,
                                    _best_status("", diagnostic), diagnostic))
    return Report("heuristic", tuple(recipients), sent_to, message_ids, subject)


# --- helpers ---------------------------------------------------------------------------------


def _first(message: email.message.Message, content_type: str) -> email.message.Message | None:
    for part in message.walk():
        if part.get_content_type() == content_type:
            return part
    return None


def _status_blocks(part: email.message.Message) -> list[email.message.Message]:
    """The field blocks of a delivery-status part, however the parser left them."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, email.message.Message)]
    # A base64 or quoted-printable delivery-status part arrives as one undecoded string.
    text = _text(part).replace("\r\n", "\n")
    parser = HeaderParser(policy=email.policy.compat32)
    return [parser.parsestr(chunk.strip() + "\n") for chunk in re.split(r"\n\s*\n", text)
            if chunk.strip()]


def _fields(part: email.message.Message) -> email.message.Message:
    """The header-style fields of a message/feedback-report part."""
    payload = part.get_payload()
    # The stdlib parser reads any message/* part other than delivery-status as a message.
    if isinstance(payload, list) and payload and isinstance(payload[0], email.message.Message):
        return payload[0]
    return HeaderParser(policy=email.policy.compat32).parsestr(_text(part).lstrip())


def _original(message: email.message.Message) -> email.message.Message | None:
    """The original message (or its headers) returned inside a report."""
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], email.message.Message):
                return inner[0]
        if kind == "text/rfc822-headers":
            return HeaderParser(policy=email.policy.compat32).parsestr(_text(part).lstrip())
    return None


def _message_ids(parts: Iterable[email.message.Message]) -> tuple[str, ...]:
    """Message-IDs of returned originals, also from a mangled copy pasted as text."""
    found: list[str] = []
    for part in parts:
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], email.message.Message):
                value = str(inner[0].get("Message-ID", ""))
                found += [m.strip("<>") for m in re.findall(r"<[^<>\s]+>", value)]
        elif part.get_content_maintype() == "text":
            found += _MESSAGE_ID.findall(_text(part))
    return tuple(dict.fromkeys(found))


def _text(part: email.message.Message) -> str:
    """A part's decoded text (transfer encoding and charset), never raising."""
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        charset = part.get_content_charset() or "utf-8"
        try:
            return payload.decode(charset, "replace")
        except LookupError:
            return payload.decode("utf-8", "replace")
    raw = part.get_payload()
    return raw if isinstance(raw, str) else ""


def _addresses(values: Iterable[Iterable[str]]) -> tuple[str, ...]:
    found = []
    for group in values:
        for _, address in getaddresses([str(v) for v in group]):
            if "@" in address:
                found.append(address.strip())
    return tuple(dict.fromkeys(found))


def _typed_address(value: object) -> str:
    """``rfc822; user@example.org`` → ``user@example.org``."""
    text = _clean(str(value or ""))
    _, _, address = text.rpartition(";")
    address = address.strip().strip("<>").strip()
    return address if "@" in address else ""


def _status_code(value: str) -> str:
    match = _ENHANCED.search(value)
    return match[0] if match else ""


def _best_code(status: str, diagnostic: str) -> tuple[int, int, int] | None:
    match = _ENHANCED.search(status or "")
    better = _ENHANCED.search(diagnostic or "")
    if match is None or (better is not None and match[2] == "0" and match[3] == "0"):
        match = better
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def _best_status(status: str, diagnostic: str) -> str:
    code = _best_code(status, diagnostic)
    return ".".join(str(n) for n in code) if code else ""


def _diagnostic_near(body: str, address: str) -> str:
    """The SMTP reply a free-text bounce quotes for an address: the lines after it."""
    lines = [line.strip() for line in body.splitlines()]
    start = next((i for i, line in enumerate(lines) if address.lower() in line.lower()), 0)
    for line in lines[start:start + 6]:
        if _SMTP_REPLY.search(line) or _ENHANCED.search(line):
            return _clean(line)[:_MAX_DIAGNOSTIC]
    return ""


def _clean(value: str) -> str:
    return " ".join(value.split())
