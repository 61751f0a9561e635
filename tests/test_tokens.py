"""Link tokens: purpose-bound, tamper-evident, expiring confirm links, key rotation, webhooks."""

from __future__ import annotations

import hashlib
import string
import time
from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from itsdangerous import TimestampSigner, URLSafeSerializer

from digest import tokens
from digest.config import Settings
from digest.errors import ConfigError
from digest.tokens import TokenError, TokenExpired

NEW, OLD = "key-new-aaaaaaaaaaaaaaaa", "key-old-bbbbbbbbbbbbbbbb"


class Person(NamedTuple):
    id: int
    email_key: str


ADA = Person(7, "ada@example.org")


def settings(*keys: str, **changes: object) -> Settings:
    return Settings(secret_key=keys, base_url="https://news.example.org", **changes)  # type: ignore[arg-type]


def token_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def flip(token: str, index: int) -> str:
    """The token with one character changed."""
    char = token[index]
    return token[:index] + ("A" if char != "A" else "B") + token[index + 1 :]


@pytest.mark.parametrize("purpose", ["confirm", "unsubscribe", "preferences"])
def test_round_trip_binds_id_and_address(purpose: tokens.Purpose) -> None:
    """A token names the subscriber id and matches only the address it was made for."""
    s = settings(NEW)
    data = tokens.read_token(s, purpose, tokens.make_token(s, purpose, ADA.id, ADA.email_key))
    assert data.subscriber_id == 7
    assert data.matches("ada@example.org")
    assert not data.matches("someone.else@example.org")


def test_address_is_not_readable_in_the_url() -> None:
    """itsdangerous only signs; the payload carries a hash, never the address."""
    url = tokens.unsubscribe_url(settings(NEW), ADA)
    assert url.startswith("https://news.example.org/u/")
    import base64

    payload = token_of(url).split(".")[0]
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    assert b"ada" not in decoded and b"example" not in decoded


def test_url_helpers_use_their_paths() -> None:
    s = settings(NEW)
    assert "/confirm/" in tokens.confirm_url(s, ADA)
    assert "/preferences/" in tokens.preferences_url(s, ADA)
    assert "/u/" in tokens.unsubscribe_url(s, ADA)


@pytest.mark.parametrize("purpose", ["confirm", "unsubscribe", "preferences"])
def test_every_one_character_change_is_rejected(purpose: tokens.Purpose) -> None:
    """No single-character edit verifies, not even in the base64 padding bits of the MAC."""
    s = settings(NEW)
    token = tokens.make_token(s, purpose, ADA.id, ADA.email_key)
    alphabet = string.ascii_letters + string.digits + "-_.=~!*% "
    for index, original in enumerate(token):
        for char in alphabet:
            if char == original:
                continue
            with pytest.raises(TokenError):
                tokens.read_token(s, purpose, token[:index] + char + token[index + 1 :])
    with pytest.raises(TokenError):
        tokens.read_token(s, purpose, token + "A")
    with pytest.raises(TokenError):
        tokens.read_token(s, purpose, token[:-1])


def test_token_for_one_purpose_is_rejected_for_another() -> None:
    s = settings(NEW)
    unsubscribe = tokens.make_token(s, "unsubscribe", ADA.id, ADA.email_key)
    with pytest.raises(TokenError):
        tokens.read_token(s, "preferences", unsubscribe)
    with pytest.raises(TokenError):
        tokens.read_token(s, "confirm", unsubscribe)
    confirm = tokens.make_token(s, "confirm", ADA.id, ADA.email_key)
    with pytest.raises(TokenError):
        tokens.read_token(s, "unsubscribe", confirm)


def test_garbage_is_rejected() -> None:
    for junk in ("", "x", "a.b.c", "é", "Lg" * 500):
        with pytest.raises(TokenError):
            tokens.read_token(settings(NEW), "unsubscribe", junk)


def test_confirm_token_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    """A confirm link older than confirm_max_age is refused as expired, not as tampered."""
    s = settings(NEW, confirm_max_age=3600)
    real_now = int(time.time())
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: real_now - 3601)
    old = tokens.make_token(s, "confirm", ADA.id, ADA.email_key)
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: real_now - 3599)
    fresh = tokens.make_token(s, "confirm", ADA.id, ADA.email_key)
    monkeypatch.undo()
    with pytest.raises(TokenExpired):
        tokens.read_token(s, "confirm", old)
    assert tokens.read_token(s, "confirm", fresh).subscriber_id == ADA.id


def test_unsubscribe_links_do_not_expire() -> None:
    """Old issues stay in inboxes; their unsubscribe links keep working (M3AAWG)."""
    s = settings(NEW)
    assert tokens.make_token(s, "unsubscribe", 1, "a@example.org") == tokens.make_token(
        s, "unsubscribe", 1, "a@example.org"
    )  # untimed: the same link in every issue


def test_key_rotation() -> None:
    """Old tokens verify while the old key is listed; new tokens use the first (newest) key."""
    old_only, rotated, new_only = settings(OLD), settings(NEW, OLD), settings(NEW)
    for purpose in ("confirm", "unsubscribe", "preferences"):
        old_token = tokens.make_token(old_only, purpose, ADA.id, ADA.email_key)  # type: ignore[arg-type]
        assert tokens.read_token(rotated, purpose, old_token).subscriber_id == ADA.id  # type: ignore[arg-type]
        with pytest.raises(TokenError):
            tokens.read_token(new_only, purpose, old_token)  # type: ignore[arg-type]
        new_token = tokens.make_token(rotated, purpose, ADA.id, ADA.email_key)  # type: ignore[arg-type]
        assert tokens.read_token(new_only, purpose, new_token).subscriber_id == ADA.id  # type: ignore[arg-type]
        with pytest.raises(TokenError):
            tokens.read_token(old_only, purpose, new_token)  # type: ignore[arg-type]


def test_missing_secret_key_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match="set DIGEST_SECRET_KEY"):
        tokens.unsubscribe_url(settings(), ADA)
    with pytest.raises(ConfigError, match="set DIGEST_SECRET_KEY"):
        tokens.require_secret_key(settings())


def test_form_token_time_trap() -> None:
    s = settings(NEW, subscribe_min_seconds=2.0)
    now = time.time()
    token = tokens.form_token(s, now)
    assert tokens.check_form_token(s, token, now + 0.5) == "too-fast"
    assert tokens.check_form_token(s, token, now + 2.5) == "ok"
    assert tokens.check_form_token(s, token, now + 2 * 86400) == "invalid"
    assert tokens.check_form_token(s, "", now) == "invalid"
    assert tokens.check_form_token(s, flip(token, 3), now + 3) == "invalid"
    # A link token is not a form token.
    assert tokens.check_form_token(s, tokens.make_token(s, "confirm", 1, "a@b.org"), now) == (
        "invalid"
    )


def test_webhook_signature() -> None:
    body = b'{"id": "evt_1", "email": "a@example.org"}'
    now = 1_700_000_000
    path = "/webhooks/events"
    header = tokens.webhook_signature("s2", now, body, path=path)
    tokens.check_webhook_signature(("s1", "s2"), header, body, now + 10, path=path)
    with pytest.raises(TokenError, match="does not match"):
        tokens.check_webhook_signature(("s1",), header, body, now, path=path)
    with pytest.raises(TokenError, match="does not match"):
        tokens.check_webhook_signature(("s2",), header, body + b" ", now, path=path)
    with pytest.raises(TokenError, match="does not match"):  # bound to its endpoint
        tokens.check_webhook_signature(("s2",), header, body, now, path="/webhooks/subscribe")
    with pytest.raises(TokenError, match="tolerance"):
        tokens.check_webhook_signature(("s2",), header, body, now + 301, path=path)
    with pytest.raises(TokenError, match="tolerance"):
        tokens.check_webhook_signature(("s2",), header, body, now - 301, path=path)
    for bad in ("", "t=abc,v2=00", "v2=00", f"t={now}", f"t={now},v2=é"):
        with pytest.raises(TokenError):
            tokens.check_webhook_signature(("s2",), bad, body, now, path=path)
    # The old scheme without the path gets a message that says what to sign instead.
    with pytest.raises(TokenError, match=r"t\.path\.body"):
        tokens.check_webhook_signature(("s2",), f"t={now},v1={'0' * 64}", body, now, path=path)
    # Several v2 values (the sender rotating): any one may match.
    both = f"{header},v2={'0' * 64}"
    tokens.check_webhook_signature(("s2",), both, body, now, path=path)
    with pytest.raises(TokenError, match="not configured"):
        tokens.check_webhook_signature((), header, body, now, path=path)


@hsettings(max_examples=200, deadline=None)
@given(
    subscriber_id=st.integers(min_value=-(2**63), max_value=2**63),
    email_key=st.text(max_size=80),
    keys=st.lists(st.text(min_size=16, max_size=40).filter(lambda k: len(k.strip()) >= 16),
                  min_size=1, max_size=3),
)
def test_links_are_the_tokens_itsdangerous_issues(
    subscriber_id: int, email_key: str, keys: list[str]
) -> None:
    """Unsubscribe and preferences links sent in past issues keep working, and new links are
    tokens URLSafeSerializer itself accepts, with the newest key.

    Byte equality is not the promise: URLSafeSerializer zlib-compresses a payload when that
    is shorter (a long run of repeated digits in the id, say); the one-HMAC path never
    compresses. Both forms are valid tokens and both readers accept both.
    """
    s = settings(*keys)
    for purpose in ("unsubscribe", "preferences"):
        serializer = URLSafeSerializer(
            list(reversed(keys)), salt=tokens.SALTS[purpose],
            signer_kwargs={"digest_method": hashlib.sha256},
        )
        payload = [subscriber_id, tokens.binding(email_key)]
        library = serializer.dumps(payload)
        ours = tokens.make_token(s, purpose, subscriber_id, email_key)
        assert serializer.loads(ours) == payload
        assert tokens.read_token(s, purpose, ours).subscriber_id == subscriber_id
        assert tokens.read_token(s, purpose, library).subscriber_id == subscriber_id
        if not library.startswith("."):  # uncompressed: the very same bytes
            assert ours == library
