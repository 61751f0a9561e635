"""Organisational domains and DMARC alignment, from the Public Suffix List bundled offline."""

from __future__ import annotations

from functools import cache

from publicsuffixlist import PublicSuffixList


@cache
def _psl() -> PublicSuffixList:
    # The list ships inside the publicsuffixlist wheel (refreshed with every release); it is
    # never fetched at run time, so a check gives the same answer offline and in CI.
    return PublicSuffixList()


def domain_of(address: str) -> str:
    """The domain of an address (``Name <a@b.example>`` or ``a@b.example``), lower-cased."""
    return address.strip().rstrip(">").rpartition("@")[2].strip().rstrip(".").lower()


def organisational_domain(domain: str) -> str:
    """The registrable domain (RFC 7489 §3.2): news.example.co.uk → example.co.uk.

    A name that is itself a public suffix, or a single label such as ``localhost``, is its
    own organisational domain.
    """
    name = domain.strip().rstrip(".").lower()
    return _psl().privatesuffix(name) or name


def aligned(signing_domain: str, from_domain: str) -> bool:
    """Relaxed DKIM alignment (RFC 7489 §3.1.1): both names share an organisational domain."""
    return organisational_domain(signing_domain) == organisational_domain(from_domain)
