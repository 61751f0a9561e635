"""The DNS records a publication should publish for its mail to be trusted, built offline."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from digest.config import Settings
from digest.dkim import DkimSigner
from digest.domains import domain_of, organisational_domain

#: Longest character-string in a TXT record (RFC 1035 §3.3); longer values are split.
_TXT_CHUNK = 255


@dataclass(frozen=True, slots=True)
class Record:
    """One record to publish, with a sentence saying why (None: nothing to publish yet)."""

    purpose: str
    name: str
    kind: str  # TXT, or A/AAAA/CNAME advice
    value: str
    comment: str = ""

    def zone_line(self) -> str:
        """The record in zone-file syntax, TXT values split into 255-byte strings."""
        if self.kind != "TXT":
            # Address records depend on where digest serve runs: advice, not a record.
            return f"; {self.name}: {self.kind} pointing at {self.value}"
        chunks = [self.value[i:i + _TXT_CHUNK] for i in range(0, len(self.value), _TXT_CHUNK)]
        quoted = " ".join(f'"{chunk}"' for chunk in chunks)
        if len(chunks) > 1:
            quoted = f"( {quoted} )"
        return f"{self.name}. 3600 IN TXT {quoted}"


def _envelope_domain(settings: Settings) -> str:
    """The domain SPF is checked against: the envelope sender's (MAIL FROM)."""
    bounce = settings.bounce_address.strip()
    return domain_of(bounce or settings.from_email)


def spf_record(settings: Settings) -> Record:
    """An SPF policy letting the configured relay send for the envelope domain, softfail else."""
    domain = _envelope_domain(settings)
    host = settings.smtp_host.strip().strip("[]")
    comment = ("Start with ~all (softfail); change to -all once DMARC reports show every "
               "legitimate source passing. Merge with an existing v=spf1 record: a domain may "
               "have only one.")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and not (address.is_loopback or address.is_private):
        mechanism = f"ip{address.version}:{address}"
    elif address is None and host and "." in host and host != "localhost":
        mechanism = f"a:{host}"
    else:
        mechanism = "mx"
        comment = (f"smtp_host is {host or 'not set'}, a local relay: list the public "
                   "addresses your mail leaves from (ip4:…); mx assumes your MX hosts send. "
                   + comment)
    return Record("SPF", domain, "TXT", f"v=spf1 {mechanism} ~all", comment)


def dmarc_record(settings: Settings) -> Record:
    """A DMARC policy that only reports (p=none) to start, with relaxed alignment."""
    domain = domain_of(settings.from_email)
    report = settings.dmarc_report_address.strip() or f"dmarc@{organisational_domain(domain)}"
    comment = ("p=none only collects aggregate reports; move to p=quarantine, then p=reject, "
               "once they show your mail passing.")
    if organisational_domain(domain_of(report)) != organisational_domain(domain):
        comment += (f" Reports go outside {organisational_domain(domain)}, so "
                    f"{domain_of(report)} must publish {domain}._report._dmarc."
                    f"{domain_of(report)} TXT \"v=DMARC1\" (RFC 7489 §7.1).")
    return Record("DMARC", f"_dmarc.{domain}", "TXT",
                  f"v=DMARC1; p=none; rua=mailto:{report}; adkim=r; aspf=r", comment)


def dkim_record(signer: DkimSigner | None) -> Record | None:
    """The public half of dkim_private_key, or None when DKIM is not configured."""
    if signer is None:
        return None
    return Record("DKIM", signer.record_name, "TXT", signer.public_record(),
                  f"The public key of dkim_private_key ({signer.algorithm.decode()}).")


def unsubscribe_records(settings: Settings) -> list[Record]:
    """The hosts List-Unsubscribe points at: the https one-click host, and the mailto domain."""
    host = (urlsplit(settings.base_url).hostname or "").lower()
    out = [Record(
        "List-Unsubscribe", host, "A/AAAA or CNAME", "the host running digest serve",
        "One-click unsubscribe (RFC 8058) POSTs to https://" + host + "/u/…: it needs a "
        "valid TLS certificate for this name.",
    )]
    mailto = settings.list_unsubscribe_mailto.strip()
    if mailto:
        address = mailto.removeprefix("mailto:").partition("?")[0]
        out.append(Record(
            "List-Unsubscribe", domain_of(address), "MX", "a server that delivers to "
            + address, "Unsubscribe requests by mail go here.",
        ))
    return out


def records(settings: Settings) -> tuple[list[Record], list[str]]:
    """(records to publish, advice lines) for the settings; makes no DNS lookup."""
    advice: list[str] = []
    signer = DkimSigner.from_settings(settings)
    dkim = dkim_record(signer)
    out = [dkim] if dkim is not None else []
    if signer is not None:
        # Dual signing: the Ed25519 key's record too (RFC 8463 §3).
        out += [Record("DKIM", name, "TXT", value,
                       f"The public key of dkim_ed25519_private_key ({algorithm}).")
                for name, value, algorithm in signer.public_records()[1:]]
    if dkim is None:
        advice.append(
            "DKIM is not configured. Make a key (openssl genrsa -out dkim.pem 2048), set "
            "dkim_domain, dkim_selector and dkim_private_key, and run digest dns again."
        )
    out += [spf_record(settings), dmarc_record(settings), *unsubscribe_records(settings)]
    return out, advice
