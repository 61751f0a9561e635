"""DKIM signing of finished messages (RFC 6376, RFC 8463)."""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path

from digest.config import Settings
from digest.errors import ConfigError

__all__ = ["DKIM_ALGORITHMS", "DkimSigner"]

_DNS_NAME_RE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")

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

    @property
    def record_name(self) -> str:
        """Where the public key is published: ``<selector>._domainkey.<domain>``."""
        return f"{self.selector.decode()}._domainkey.{self.domain.decode()}"

    def public_record(self) -> str:
        """The DKIM TXT record value for this key (RFC 6376 §3.6.1, RFC 8463 §4)."""
        if self.algorithm == b"ed25519-sha256":
            from nacl.signing import SigningKey

            public = bytes(SigningKey(base64.b64decode(self._key)).verify_key)
            return "v=DKIM1; k=ed25519; p=" + base64.b64encode(public).decode("ascii")
        from dkim.crypto import parse_pem_private_key

        key = parse_pem_private_key(self._key)
        der = _rsa_public_key_info(int(key["modulus"]), int(key["publicExponent"]))
        return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode("ascii")


def _der(tag: int, body: bytes) -> bytes:
    """One DER element: tag, definite length, body."""
    size = len(body)
    if size < 0x80:
        return bytes([tag, size]) + body
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + body


def _rsa_public_key_info(modulus: int, exponent: int) -> bytes:
    """SubjectPublicKeyInfo DER of an RSA key, what ``openssl rsa -pubout -outform DER`` writes."""

    def integer(value: int) -> bytes:
        # One spare leading bit keeps the two's-complement INTEGER positive.
        return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))

    rsa_encryption = bytes.fromhex("06092a864886f70d0101010500")  # OID 1.2.840.113549.1.1.1, NULL
    public_key = _der(0x30, integer(modulus) + integer(exponent))
    return _der(0x30, _der(0x30, rsa_encryption) + _der(0x03, b"\x00" + public_key))


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
