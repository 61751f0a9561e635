"""DKIM signing of finished messages through OpenSSL (RFC 6376; Ed25519 per RFC 8463).

The signature is computed here rather than by dkimpy, whose RSA is pure Python (about 115
signatures per second per core): the `cryptography` package signs in OpenSSL, and the
canonicalization is a few byte operations because the one builder's output is already
canonical in the ways that matter (CRLF lines, 7-bit quoted-printable, no trailing blank
lines). Headers use relaxed and the body simple canonicalization (``c=relaxed/simple``).
With dual signing (RFC 8463 §3) one body hash and one header canonicalization serve both
signatures. dkimpy stays the verifier in the tests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from digest.config import Settings
from digest.errors import ConfigError

__all__ = ["DKIM_ALGORITHMS", "DkimSigner", "body_hash"]

_DNS_NAME_RE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")

#: The DKIM signature algorithms digest signs with.
DKIM_ALGORITHMS = ("rsa-sha256", "ed25519-sha256")

# Header fields covered by the signature. Names listed twice are over-signed (RFC 6376 §8.15):
# the extra, absent instance stops anyone adding a second From, To, Subject or unsubscribe
# header after signing.
_DKIM_HEADERS = (
    "from", "reply-to", "to", "subject", "date", "message-id", "list-id",
    "list-unsubscribe", "list-unsubscribe-post", "list-archive", "feedback-id",
    "mime-version", "content-type",
    "from", "reply-to", "to", "subject", "list-unsubscribe", "list-unsubscribe-post",
    "list-archive", "feedback-id",
)

# PKCS#8 wrapper of an Ed25519 private key (RFC 8410 §7): this prefix, then the 32-byte seed.
_ED25519_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")

_WSP_RUN = re.compile(rb"[ \t]+")
_UNFOLD = re.compile(rb"\r\n(?=[ \t])")
_SIGNATURE_LINE = 72  # b= is folded into pieces this long, so lines stay under 78


def body_hash(body: bytes | memoryview) -> bytes:
    """Base64 SHA-256 of the body under simple canonicalization (RFC 6376 §3.4.3).

    Simple: the body as it is, except that trailing empty lines are dropped and a missing
    final CRLF is added. Hashed without copying the (large) body.
    """
    view = memoryview(body)
    end = len(view)
    while end >= 4 and view[end - 4:end].tobytes() == b"\r\n\r\n":
        end -= 2
    digest = hashlib.sha256(view[:end])
    if end < 2 or view[end - 2:end].tobytes() != b"\r\n":
        digest.update(b"\r\n")
    return base64.b64encode(digest.digest())


def _relaxed(field: bytes) -> bytes:
    """One header field, relaxed (RFC 6376 §3.4.2): name lower-cased, value unfolded and its
    runs of whitespace made one space, no whitespace around the colon or at the end."""
    name, _, value = field.partition(b":")
    value = _WSP_RUN.sub(b" ", _UNFOLD.sub(b"", value)).strip(b" \t\r\n")
    return name.rstrip(b" \t").lower() + b":" + value


@dataclass(frozen=True)
class _Key:
    """One private key and where its public half is published."""

    selector: bytes
    algorithm: bytes
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    def sign(self, digest: bytes) -> bytes:
        if isinstance(self.key, rsa.RSAPrivateKey):
            return self.key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        # RFC 8463 §3: Ed25519 (pure) signs the SHA-256 hash of the canonical data.
        return self.key.sign(digest)


class DkimSigner:
    """Signs finished messages with one private key (or two, for dual signing), loaded once."""

    def __init__(self, domain: str, selector: str, private_key: bytes,
                 algorithm: str = "rsa-sha256", *, source: str = "",
                 also: Sequence[tuple[str, bytes, str]] = ()) -> None:
        """``private_key`` is a PEM key, or for Ed25519 also the base64 32-byte seed.

        ``also`` adds more signatures, each ``(selector, private_key, algorithm)``: RFC 8463
        §3 suggests an Ed25519 signature beside the RSA one while receivers catch up.
        """
        self.domain = domain.encode("ascii")
        self._source = source or "(given key)"
        self._keys = [self._key(selector, private_key, algorithm)]
        self._keys += [self._key(*extra) for extra in also]
        self.selector = self._keys[0].selector
        self.algorithm = self._keys[0].algorithm
        self._header_names = tuple(name.encode("ascii") for name in _DKIM_HEADERS)
        self._h_tag = b":\r\n ".join(
            b":".join(name.encode("ascii") for name in _DKIM_HEADERS[start:start + 6])
            for start in range(0, len(_DKIM_HEADERS), 6)
        )

    def _key(self, selector: str, private_key: bytes, algorithm: str) -> _Key:
        if algorithm not in DKIM_ALGORITHMS:
            raise ConfigError(
                f"dkim_algorithm {algorithm!r} must be one of {', '.join(DKIM_ALGORITHMS)}"
            )
        return _Key(selector.encode("ascii"), algorithm.encode("ascii"),
                    _parse_key(private_key, algorithm, self._source))

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
        key = _load_key(_read(path, "dkim_private_key"), algorithm, path)
        also: list[tuple[str, bytes, str]] = []
        ed_selector = settings.dkim_ed25519_selector.strip()
        ed_key = settings.dkim_ed25519_private_key.strip()
        if ed_selector or ed_key:
            if not (ed_selector and ed_key):
                raise ConfigError(
                    "dual signing needs both dkim_ed25519_selector and "
                    "dkim_ed25519_private_key: set the missing one, or clear both"
                )
            if not _DNS_NAME_RE.fullmatch(ed_selector):
                raise ConfigError(f"dkim_ed25519_selector {ed_selector!r} is not a plain DNS name")
            ed_path = Path(ed_key).expanduser()
            raw = _load_key(_read(ed_path, "dkim_ed25519_private_key"), "ed25519-sha256",
                            ed_path, field="dkim_ed25519_private_key")
            also.append((ed_selector, raw, "ed25519-sha256"))
        return cls(values["dkim_domain"], values["dkim_selector"], key, algorithm,
                   source=str(path), also=also)

    @property
    def algorithms(self) -> list[str]:
        """The algorithm of every signature this signer adds, first key first."""
        return [key.algorithm.decode("ascii") for key in self._keys]

    def sign(self, message: bytes, *, body_hash_value: bytes | None = None) -> bytes:
        """The message with one DKIM-Signature header per key prepended.

        ``body_hash_value`` is :func:`body_hash` of the body when the caller has it already
        (a body that is the same for every recipient is hashed once per issue variant).
        """
        split = message.find(b"\r\n\r\n")
        head = message if split < 0 else message[:split + 2]
        body = memoryview(message)[split + 4:] if split >= 0 else memoryview(b"")
        bh = body_hash_value if body_hash_value is not None else body_hash(body)
        canonical = hashlib.sha256(self._canonical_headers(head))
        timestamp = b"%d" % int(time.time())
        out: list[bytes] = []
        for key in self._keys:
            header = (
                b"DKIM-Signature: v=1; a=" + key.algorithm + b"; c=relaxed/simple; d="
                + self.domain + b"; s=" + key.selector + b";\r\n t=" + timestamp
                + b"; h=" + self._h_tag + b";\r\n bh=" + bh + b";\r\n b="
            )
            digest = canonical.copy()
            digest.update(_relaxed(header))
            signature = base64.b64encode(key.sign(digest.digest()))
            folded = b"\r\n ".join(
                signature[start:start + _SIGNATURE_LINE]
                for start in range(0, len(signature), _SIGNATURE_LINE)
            )
            out.append(header + folded + b"\r\n")
        # The first key's signature goes on top, where most verifiers look first.
        return b"".join(out) + message

    def _canonical_headers(self, head: bytes) -> bytes:
        """The signed header fields, relaxed, each instance taken from the bottom up."""
        fields: dict[bytes, list[bytes]] = {}
        start = 0
        size = len(head)
        while start < size:
            end = head.find(b"\r\n", start)
            if end < 0:
                end = size
            # A field runs on over continuation lines, which start with a space or tab.
            while end + 2 < size and head[end + 2] in b" \t":
                following = head.find(b"\r\n", end + 2)
                end = size if following < 0 else following
            field = head[start:end]
            name = field.partition(b":")[0].rstrip(b" \t").lower()
            fields.setdefault(name, []).append(field)
            start = end + 2
        out: list[bytes] = []
        for name in self._header_names:
            instances = fields.get(name)
            if instances:
                out.append(_relaxed(instances.pop()) + b"\r\n")
        return b"".join(out)

    # -- the public halves, for `digest dns` -----------------------------------------------

    @property
    def record_name(self) -> str:
        """Where the (first) public key is published: ``<selector>._domainkey.<domain>``."""
        return f"{self.selector.decode()}._domainkey.{self.domain.decode()}"

    def public_record(self) -> str:
        """The DKIM TXT record value for the (first) key (RFC 6376 §3.6.1, RFC 8463 §4)."""
        return _public_record(self._keys[0])

    def public_records(self) -> list[tuple[str, str, str]]:
        """(record name, TXT value, algorithm) for every key, first key first."""
        domain = self.domain.decode()
        return [(f"{key.selector.decode()}._domainkey.{domain}", _public_record(key),
                 key.algorithm.decode()) for key in self._keys]


def _public_record(key: _Key) -> str:
    public = key.key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode("ascii")
    der = public.public_bytes(serialization.Encoding.DER,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode("ascii")


def _read(path: Path, field: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{field}: cannot read {path} ({exc.strerror or exc}); set {field} to the path "
            "of the private key file"
        ) from None


def _parse_key(
    raw: bytes, algorithm: str, source: str
) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    """The OpenSSL key object for raw (PEM, or an Ed25519 seed in base64)."""
    problem = ""
    if b"-----BEGIN" in raw:
        try:
            key = serialization.load_pem_private_key(raw, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        else:
            wanted = rsa.RSAPrivateKey if algorithm == "rsa-sha256" else ed25519.Ed25519PrivateKey
            if isinstance(key, wanted):
                if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 1024:
                    problem = f"{key.key_size}-bit RSA is too short (RFC 8301: 1024 at least)"
                else:
                    return key
            else:
                problem = f"it holds a {type(key).__name__.removeprefix('_')} key"
    elif algorithm == "ed25519-sha256":
        try:
            return ed25519.Ed25519PrivateKey.from_private_bytes(
                base64.b64decode(raw.strip(), validate=True)
            )
        except (binascii.Error, ValueError) as exc:
            problem = str(exc)
    else:
        problem = "it is not PEM"
    raise ConfigError(
        f"dkim_private_key {source} is not a valid {algorithm} private key ({problem}); "
        "set dkim_private_key to the right file"
    )


def _load_key(raw: bytes, algorithm: str, path: Path, *, field: str = "dkim_private_key") -> bytes:
    """The key file's bytes, checked for the form the algorithm needs (PEM, or Ed25519 seed)."""
    raw = raw.replace(b"\r\n", b"\n").strip()
    if algorithm == "rsa-sha256":
        if b"-----BEGIN" not in raw:
            raise ConfigError(
                f"{field} {path} is not a PEM file; set {field} to an RSA "
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
                f"{field} {path} is not an Ed25519 private key; set "
                f"{field} to one (openssl genpkey -algorithm ed25519)"
            )
        return raw + b"\n"
    try:
        seed = base64.b64decode(raw, validate=True)
    except binascii.Error:
        seed = b""
    if len(seed) != 32:
        raise ConfigError(
            f"{field} {path} does not hold a base64 Ed25519 key (32 bytes); set "
            f"{field} to the file dknewkey --ktype ed25519 wrote, or a PEM key"
        )
    return raw
