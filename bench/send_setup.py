"""A SQLite file with N subscribers and a week of articles, and the environment `digest send` needs.

Shared by the SMTP benchmarks and the profile, so every figure sends the same issue.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench_send import seed, settings_for

from digest.db import Database
from digest.issues import parse_week

#: The ISO week the seeded articles fall in.
WEEK = "2025-W47"


def seed_sqlite(folder: Path, subscribers: int, articles: int = 24, name: str = "send") -> str:
    """A fresh SQLite file in folder, seeded; returns its URL."""
    url = f"sqlite:///{folder / (name + '.db')}"
    db = Database(url)
    settings = settings_for(url)
    seed(db, parse_week(WEEK, settings.tz), subscribers, articles)
    db.dispose()
    return url


def write_dkim_key(folder: Path, algorithm: str) -> Path:
    """A new private key for algorithm in folder, PEM (PKCS#8)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    key = (rsa.generate_private_key(public_exponent=65537, key_size=2048)
           if algorithm == "rsa-sha256" else ed25519.Ed25519PrivateKey.generate())
    path = folder / f"dkim-{algorithm}.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def send_env(url: str, port: int, folder: Path, *, dkim: str | None = None,
             **extra: str) -> dict[str, str]:
    """Environment for `digest send` into an SMTP server on 127.0.0.1:port."""
    settings = settings_for(url)
    env = dict(os.environ)
    env.update({
        "DIGEST_DATABASE_URL": url,
        "DIGEST_SECRET_KEY": settings.secret_key[0],
        "DIGEST_POSTAL_ADDRESS": settings.postal_address,
        "DIGEST_BASE_URL": settings.base_url,
        "DIGEST_FROM_EMAIL": settings.from_email,
        "DIGEST_BACKEND": "smtp",
        "DIGEST_SMTP_HOST": "127.0.0.1",
        "DIGEST_SMTP_PORT": str(port),
        "DIGEST_SMTP_SECURITY": "none",
    })
    if dkim:
        env.update({
            "DIGEST_DKIM_DOMAIN": "news.example.org",
            "DIGEST_DKIM_SELECTOR": "bench",
            "DIGEST_DKIM_PRIVATE_KEY": str(write_dkim_key(folder, dkim)),
            "DIGEST_DKIM_ALGORITHM": dkim,
        })
    env.update({f"DIGEST_{key.upper()}": value for key, value in extra.items()})
    return env
