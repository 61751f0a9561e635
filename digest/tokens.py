"""Signed, purpose-bound, rotatable link tokens for confirm, unsubscribe and preferences links.

A token carries ``[subscriber id, binding]`` where the binding is a short hash of the
subscriber's ``email_key``: a token minted for a deleted subscriber cannot act on another
person who later gets the same id, and the address itself never appears in a URL
(itsdangerous payloads are signed, not encrypted).

``settings.secret_key`` lists keys newest first; itsdangerous wants the newest *last*, so the
tuple is reversed. New tokens are signed with the newest key and every listed key verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Protocol

from itsdangerous import (
    BadData,
    BadSignature,
    SignatureExpired,
    Signer,
    TimestampSigner,
    URLSafeSerializer,
    URLSafeTimedSerializer,
)
from itsdangerous.encoding import base64_decode, base64_encode, want_bytes

from digest.config import Settings
from digest.errors import ConfigError, DigestError

Purpose = Literal["confirm", "unsubscribe", "preferences"]

#: One salt per purpose, so a token signed for one purpose never verifies for another.
SALTS: dict[str, str] = {
    "confirm": "digest.confirm.v1",
    "unsubscribe": "digest.unsubscribe.v1",
    "preferences": "digest.preferences.v1",
}
FORM_SALT = "form-time"

#: Link paths per purpose, relative to base_url.
PATHS: dict[str, str] = {
    "confirm": "/confirm/", "unsubscribe": "/u/", "preferences": "/preferences/",
}

#: A form token older than this is refused (the page was left open for a day).
FORM_MAX_AGE = 24 * 3600


class TokenError(DigestError):
    """A link token is malformed, tampered with, for another purpose, or expired."""


class TokenExpired(TokenError):
    """A correctly signed token that is older than its purpose allows."""


class HasKey(Protocol):
    """Anything with a subscriber id and email_key (a model row or a plain tuple-like)."""

    @property
    def id(self) -> int: ...

    @property
    def email_key(self) -> str: ...


@dataclass(frozen=True, slots=True)
class TokenData:
    """What a verified token says: the subscriber id and the binding to their address."""

    subscriber_id: int
    binding: str

    def matches(self, email_key: str) -> bool:
        """True if the token was minted for this address."""
        return hmac.compare_digest(self.binding.encode(), binding(email_key).encode())


def binding(email_key: str) -> str:
    """A short, non-reversible tag of the address that ties a token to one person."""
    digest = hashlib.sha256(b"digest-token-binding\0" + email_key.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest[:9]).decode("ascii")


#: Shortest signing key accepted. Every listed key verifies links, so one short key would
#: let anyone who guesses it forge unsubscribe and preferences links.
MIN_KEY_LENGTH = 16

_MAKE_KEY = (
    "generate one with `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'` "
    "(or run `digest demo` in an empty folder, which writes one into its digest.toml)"
)


def _keys(secret_key: tuple[str, ...]) -> list[str]:
    if not secret_key:
        raise ConfigError(
            f"set DIGEST_SECRET_KEY to a long random string: {_MAKE_KEY}; "
            "to rotate, list the new key first: DIGEST_SECRET_KEY=new,old"
        )
    for position, key in enumerate(secret_key, 1):
        if len(key.strip()) < MIN_KEY_LENGTH:
            # Say which entry and how long, never what it is.
            raise ConfigError(
                f"secret_key entry {position} of {len(secret_key)} is {len(key.strip())} "
                f"character(s) long; each key must be at least {MIN_KEY_LENGTH}: {_MAKE_KEY}"
            )
    return list(reversed(secret_key))


def require_secret_key(settings: Settings) -> None:
    """Raise ConfigError now if no signing key is set, rather than on the first link."""
    _keys(settings.secret_key)


class _Canonical(Signer):
    """A signer that also refuses non-canonical base64 in the signature.

    A base64 signature's last character carries spare bits that decoders ignore, so with
    the stock signer some one-character edits of a token still verify. A token must be
    exactly what we issued.
    """

    def verify_signature(self, value: str | bytes, sig: str | bytes) -> bool:
        """True only for the exact signature we would have issued."""
        sig = want_bytes(sig)
        try:
            canonical = base64_encode(base64_decode(sig)) == sig
        except BadData:
            return False
        return canonical and super().verify_signature(value, sig)


class _CanonicalTimestamp(_Canonical, TimestampSigner):
    """The timestamped variant of :class:`_Canonical` (confirm links, form tokens)."""


_SIGNING = {"digest_method": hashlib.sha256}


@lru_cache(maxsize=32)
def _serializer(
    secret_key: tuple[str, ...], purpose: str
) -> URLSafeSerializer | URLSafeTimedSerializer:
    # Confirm links expire, so they carry a timestamp; unsubscribe and preferences links must
    # keep working for as long as old issues sit in inboxes (M3AAWG unsubscribe BCP), so they
    # are untimed: shorter, and the same for every issue sent to one person.
    if purpose == "confirm":
        return URLSafeTimedSerializer(_keys(secret_key), salt=SALTS[purpose],
                                      signer=_CanonicalTimestamp, signer_kwargs=_SIGNING)
    return URLSafeSerializer(_keys(secret_key), salt=SALTS[purpose], signer=_Canonical,
                             signer_kwargs=_SIGNING)


@lru_cache(maxsize=8)
def _form_serializer(secret_key: tuple[str, ...]) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(_keys(secret_key), salt=FORM_SALT,
                                  signer=_CanonicalTimestamp, signer_kwargs=_SIGNING)


@lru_cache(maxsize=32)
def _link_key(secret_key: tuple[str, ...], purpose: str) -> bytes:
    """The HMAC key itsdangerous derives for an untimed purpose, derived once per process.

    It is what ``Signer.derive_key`` computes ("django-concat"): SHA-256 of salt, "signer"
    and the newest secret. A send signs two links per message; deriving the key, building a
    signer and trying zlib on a 30-byte payload for each was a tenth of the send's CPU.
    """
    newest = _keys(secret_key)[-1].encode("utf-8")
    return hashlib.sha256(SALTS[purpose].encode("ascii") + b"signer" + newest).digest()


def make_token(settings: Settings, purpose: Purpose, subscriber_id: int, email_key: str) -> str:
    """Sign a token for one purpose and one subscriber."""
    if purpose == "confirm" or isinstance(subscriber_id, bool):
        payload = [subscriber_id, binding(email_key)]
        return str(_serializer(settings.secret_key, purpose).dumps(payload))
    # The same bytes URLSafeSerializer.dumps makes (compact JSON, unpadded URL-safe base64,
    # "." and the HMAC-SHA256), in one HMAC: the binding is URL-safe base64, so the JSON
    # needs no escaping. It never compresses: URLSafeSerializer would for an id with a long
    # run of repeated digits, but both forms are valid tokens that every reader accepts.
    body = base64.urlsafe_b64encode(
        b"[%d,\"%s\"]" % (subscriber_id, binding(email_key).encode("ascii"))
    ).rstrip(b"=")
    mac = hmac.digest(_link_key(settings.secret_key, purpose), body, "sha256")
    return (body + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode("ascii")


def read_token(settings: Settings, purpose: Purpose, token: str) -> TokenData:
    """Verify a token for purpose; raise TokenError (or TokenExpired for old confirm links)."""
    serializer = _serializer(settings.secret_key, purpose)
    try:
        if isinstance(serializer, URLSafeTimedSerializer):
            payload: Any = serializer.loads(token, max_age=settings.confirm_max_age)
        else:
            payload = serializer.loads(token)
    except SignatureExpired:
        raise TokenExpired("this link has expired") from None
    except (BadData, UnicodeError, ValueError):
        raise TokenError("this link is not valid") from None
    if (
        not isinstance(payload, list)
        or len(payload) != 2
        or not isinstance(payload[0], int)
        or isinstance(payload[0], bool)
        or not isinstance(payload[1], str)
    ):
        raise TokenError("this link is not valid")
    return TokenData(subscriber_id=payload[0], binding=payload[1])


def _url(settings: Settings, purpose: Purpose, subscriber: HasKey) -> str:
    token = make_token(settings, purpose, subscriber.id, subscriber.email_key)
    return settings.base_url.rstrip("/") + PATHS[purpose] + token


def confirm_url(settings: Settings, subscriber: HasKey) -> str:
    """The double opt-in link (expires after settings.confirm_max_age seconds)."""
    return _url(settings, "confirm", subscriber)


def unsubscribe_url(settings: Settings, subscriber: HasKey) -> str:
    """The unsubscribe link; also the RFC 8058 List-Unsubscribe one-click POST target."""
    return _url(settings, "unsubscribe", subscriber)


def preferences_url(settings: Settings, subscriber: HasKey) -> str:
    """The link to the page where a reader changes name and sections."""
    return _url(settings, "preferences", subscriber)


def form_token(settings: Settings, now: float | None = None) -> str:
    """A signed timestamp for the subscribe form's time trap."""
    # itsdangerous' own timestamp has whole seconds; the payload keeps milliseconds.
    issued = time.time() if now is None else now
    return str(_form_serializer(settings.secret_key).dumps(math.floor(issued * 1000) / 1000))


FormCheck = Literal["ok", "too-fast", "invalid"]


def check_form_token(settings: Settings, token: str, now: float) -> FormCheck:
    """Say whether a form token is valid and old enough to come from a person."""
    if not token:
        return "invalid"
    try:
        issued = _form_serializer(settings.secret_key).loads(token, max_age=FORM_MAX_AGE)
    except (BadSignature, SignatureExpired, BadData, UnicodeError, ValueError):
        return "invalid"
    if not isinstance(issued, int | float) or isinstance(issued, bool):
        return "invalid"
    age = now - issued
    if age > FORM_MAX_AGE:
        return "invalid"
    if age < -5:  # issued in the future: clock skew between workers at most
        return "invalid"
    if age < settings.subscribe_min_seconds:
        return "too-fast"
    return "ok"


#: Webhook signatures older (or further in the future) than this are refused.
WEBHOOK_TOLERANCE = 300
WEBHOOK_HEADER = "X-Digest-Signature"


def _webhook_mac(secret: str, timestamp: int, path: str, body: bytes) -> str:
    # The path is signed so that a body signed for one endpoint cannot be replayed to another.
    signed = f"{timestamp}.{path}.".encode() + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def webhook_signature(secret: str, timestamp: int, body: bytes, *, path: str) -> str:
    """The ``X-Digest-Signature`` value: ``t=<unix time>,v2=<hex HMAC-SHA256 of "t.path.body">``.

    path is the endpoint below base_url, e.g. ``/webhooks/events``.
    """
    return f"t={timestamp},v2={_webhook_mac(secret, timestamp, path, body)}"


def check_webhook_signature(
    secrets: tuple[str, ...], header: str, body: bytes, now: float, *, path: str
) -> None:
    """Raise TokenError unless header signs path and body with one of secrets, in time.

    Several ``v2=`` values may be present (the sender rotating its secret) and any of our
    secrets may match (us rotating ours).
    """
    secrets = tuple(s for s in secrets if s.strip())  # an empty key would sign for anyone
    if not secrets:
        raise TokenError("webhooks are not configured: set DIGEST_WEBHOOK_SECRETS")
    timestamp: int | None = None
    signatures: list[str] = []
    old_scheme = False
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif name == "v2" and value:
            signatures.append(value.strip().lower())
        elif name == "v1":
            old_scheme = True
    if timestamp is not None and not signatures and old_scheme:
        raise TokenError('v1 signatures (of "t.body") are not accepted: sign "t.path.body" '
                         "and send it as v2=")
    if timestamp is None or not signatures:
        raise TokenError(f"missing or malformed {WEBHOOK_HEADER} header")
    if abs(now - timestamp) > WEBHOOK_TOLERANCE:
        raise TokenError("signature timestamp is outside the 5-minute tolerance")
    matched = False
    for secret in secrets:
        expected = _webhook_mac(secret, timestamp, path, body)
        for candidate in signatures:
            # Compare every pair (no early exit) so timing says nothing about which matched.
            matched |= hmac.compare_digest(expected.encode(), candidate.encode("utf-8", "replace"))
    if not matched:
        raise TokenError("signature does not match")
