"""VERP envelope senders: ``bounces+<delivery id>-<signature>@domain``, signed and verified.

The signature is an HMAC of the delivery id under the newest secret key (every listed key
verifies, so keys rotate). It is lower-case base32, because some mail servers lower-case the
local part of the address a bounce is sent to; 12 characters (60 bits) make guessing one by
sending forged bounces hopeless, and the address stays well under the 64-octet local part.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

from digest.config import Settings
from digest.errors import ConfigError
from digest.tokens import require_secret_key

_SALT = b"digest.verp.v1\0"
_MAC_LENGTH = 12
_TAG = re.compile(rf"(\d{{1,18}})-([a-z2-7]{{{_MAC_LENGTH}}})")
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*/=?^_`{|}~.-]{1,40}")
_DOMAIN = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")


@dataclass(frozen=True, slots=True)
class VerpAddress:
    """A ``local+tag@domain`` address at the bounce address: which delivery, and if signed."""

    delivery_id: int | None  # None when the tag is not of the form <id>-<signature>
    valid: bool


def bounce_parts(settings: Settings) -> tuple[str, str]:
    """(local part, domain) of the bounce address, lower-cased; ConfigError if unusable."""
    address = settings.bounce_address.strip()
    local, at, domain = address.rpartition("@")
    if not at or not _LOCAL.fullmatch(local) or not _DOMAIN.fullmatch(domain):
        raise ConfigError(
            f"bounce_address {address!r} is not a plain address like bounces@news.example.org"
        )
    if "+" in local:
        raise ConfigError(
            f"bounce_address {address!r} must not contain '+': digest adds its own "
            "+tag to it for VERP"
        )
    return local.lower(), domain.lower()


def envelope_sender(settings: Settings, delivery_id: int | None = None) -> str:
    """The envelope MAIL FROM for a message: VERP-signed per delivery, or the plain address."""
    if not settings.bounce_address.strip():
        return settings.from_email.strip()
    local, domain = bounce_parts(settings)
    if not settings.verp or delivery_id is None:
        return f"{local}@{domain}"
    return f"{local}+{delivery_id}-{_mac(settings.secret_key[0], delivery_id)}@{domain}"


def decode(settings: Settings, address: str) -> VerpAddress | None:
    """What a bounce's recipient address says, or None if it is not a tagged bounce address.

    Case is ignored throughout; a tag with a wrong signature is returned with ``valid=False``.
    """
    if not settings.bounce_address.strip():
        return None
    local, domain = bounce_parts(settings)
    their_local, at, their_domain = address.strip().strip("<>").lower().rpartition("@")
    if not at or their_domain != domain or not their_local.startswith(local + "+"):
        return None
    tag = _TAG.fullmatch(their_local[len(local) + 1:])
    if tag is None:
        return VerpAddress(None, False)
    delivery_id = int(tag[1])
    valid = any(
        hmac.compare_digest(_mac(key, delivery_id), tag[2]) for key in settings.secret_key if key
    )
    return VerpAddress(delivery_id, valid)


def require_usable(settings: Settings) -> None:
    """ConfigError unless the bounce settings can make and check VERP addresses."""
    if settings.bounce_address.strip():
        bounce_parts(settings)
    if settings.verp:
        require_secret_key(settings)


def _mac(key: str, delivery_id: int) -> str:
    digest = hmac.new(key.encode(), _SALT + str(delivery_id).encode(), hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:_MAC_LENGTH]
