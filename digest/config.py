"""Frozen settings: code defaults, then digest.toml, then DIGEST_* variables, then flags."""

import dataclasses
import ipaddress
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from digest.errors import ConfigError

ENV_PREFIX = "DIGEST_"
DEFAULT_CONFIG_FILE = "digest.toml"

#: Settings whose values are never printed in full.
SECRET_FIELDS = frozenset(
    {"secret_key", "smtp_password", "webhook_secrets", "dkim_private_key",
     "dkim_ed25519_private_key", "bounce_mailbox_password"}
)

#: The email layouts the templates provide (templates/layouts/NAME.mjml.j2).
LAYOUTS = ("cards", "full")

_COLOUR_SUFFIXES = ("accent", "text", "background", "surface", "muted", "link", "rule")
_HEX_COLOUR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
# Family names and generic families: no characters that could end a CSS declaration or an
# HTML attribute (the stack goes into both).
_FONT_NAME = r"\s*(?:'[A-Za-z0-9 -]+'|[A-Za-z0-9 -]+)\s*"
_FONT_STACK = re.compile(f"{_FONT_NAME}(?:,{_FONT_NAME})*")

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every knob digest has. A field ``foo_bar`` is ``DIGEST_FOO_BAR`` in the environment
    and ``foo_bar = ...`` (or ``bar = ...`` under a ``[foo]`` table) in digest.toml."""

    # Storage
    database_url: str = "sqlite:///subscribers.db"

    # The publication
    newsletter_name: str = "The Weekly Digest"
    from_email: str = "digest@example.com"
    from_name: str = "The Weekly Digest"
    reply_to: str = ""
    base_url: str = "http://127.0.0.1:8000"
    postal_address: str = ""
    language: str = "en"
    timezone: str = "UTC"
    list_id: str = ""
    list_unsubscribe_mailto: str = ""
    # Feedback-ID header (Gmail's Feedback Loop); "" sends none. Sender id default: the From
    # organisational domain.
    feedback_id: str = "{campaign}:{issue}:{list}:{sender}"
    feedback_id_sender: str = ""

    # Article import (digest import URL): a deadline for each whole download, and a cap.
    import_timeout: float = 20.0
    import_max_bytes: int = 20 * 1024 * 1024

    # Selection
    sections: tuple[str, ...] = ()
    section_cap: int = 4
    total_cap: int = 24

    # Rendering
    templates_dir: str = ""
    subject_template: str = "{headline}{and_more}"  # " and 5 more stories"; see headlines.py
    utm_source: str = ""
    utm_medium: str = "email"
    utm_campaign: str = ""
    html_size_budget: int = 100_000
    # "cards": a lead story, then thumbnail cards per section; "full": every article with a
    # full-width photo and a button (the original layout).
    layout: str = "cards"
    # The size of an article photo when the feed does not give one (only the ratio matters:
    # the email scales photos to its columns).
    image_width: int = 1200
    image_height: int = 675

    # Theme ([theme] table). Every template reads these through templates/partials/theme.mjml.j2.
    theme_accent: str = "#a33b20"  # section labels, kickers
    theme_text: str = "#1f2328"
    theme_background: str = "#f4f1ea"  # the page around the cards
    theme_surface: str = "#ffffff"  # the cards
    theme_muted: str = "#5f6368"  # bylines, dates, footer
    theme_link: str = "#1f2328"  # headlines and links
    theme_rule: str = "#d8d2c4"  # dividers and image placeholders
    theme_dark_accent: str = "#f08c6c"
    theme_dark_text: str = "#e8e6e3"
    theme_dark_background: str = "#121212"
    theme_dark_surface: str = "#1e1e1e"
    theme_dark_muted: str = "#b0aca5"
    theme_dark_link: str = "#e8e6e3"
    theme_dark_rule: str = "#3a3a3a"
    theme_heading_font: str = "Georgia, 'Times New Roman', serif"
    theme_body_font: str = "Helvetica, Arial, sans-serif"
    theme_logo_url: str = ""  # shown instead of the newsletter name when set
    theme_logo_width: int = 200
    theme_logo_height: int = 0  # required with theme_logo_url
    theme_logo_alt: str = ""  # defaults to newsletter_name

    # Links and security
    secret_key: tuple[str, ...] = ()
    confirm_max_age: int = 7 * 24 * 3600
    webhook_secrets: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    subscribe_ip_limit: int = 20
    subscribe_email_limit: int = 5
    subscribe_min_seconds: float = 2.0
    # digest serve behind N reverse proxies: trust that many X-Forwarded-For/-Proto hops,
    # when they come from trusted_proxy_address (the nearest proxy; "*" for any peer).
    trusted_proxies: int = 0
    trusted_proxy_address: str = "127.0.0.1"

    # Mail backend
    backend: str = "file"
    file_dir: str = "outbox"
    smtp_host: str = "localhost"
    smtp_port: int = 587
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_security: str = "starttls"
    smtp_connections: int = 2
    smtp_timeout: float = 30.0
    dkim_domain: str = ""
    dkim_selector: str = ""
    dkim_private_key: str = ""
    dkim_algorithm: str = "rsa-sha256"
    # Dual signing (RFC 8463 §3): a second, Ed25519 signature beside the first one.
    dkim_ed25519_selector: str = ""
    dkim_ed25519_private_key: str = ""
    # Where DMARC aggregate reports go (rua); default dmarc@ the From organisational domain.
    dmarc_report_address: str = ""

    # Sending
    send_inflight: int = 200
    send_batch: int = 200
    send_max_attempts: int = 5
    send_retry_base: float = 600.0
    send_lease_seconds: float = 120.0
    send_rate: float = 0.0
    # "local 08:00": each reader at 08:00 in their own time zone on the day.
    deliver_at: str = ""
    # "07:00-20:00": hours mail may go out (the reader's zone when deliver_at is local).
    send_window: str = ""

    # Bounces and complaints (digest bounces)
    bounce_address: str = ""  # envelope MAIL FROM (Return-Path); "" means from_email
    verp: bool = False  # bounces+<delivery>-<signature>@domain per message
    bounce_soft_limit: int = 3  # N soft bounces in a row ...
    bounce_soft_days: int = 30  # ... within M days mark the subscriber bounced
    bounce_mailbox_protocol: str = "imap"  # imap | pop3
    bounce_mailbox_host: str = ""
    bounce_mailbox_port: int = 0  # 0: the protocol's default for the security mode
    bounce_mailbox_security: str = "ssl"  # ssl | starttls | insecure-loopback
    bounce_mailbox_username: str = ""
    bounce_mailbox_password: str = ""
    bounce_mailbox_cafile: str = ""  # "" trusts the system's certificate authorities
    bounce_mailbox_folder: str = "INBOX"
    bounce_mailbox_processed: str = "digest-processed"  # "" deletes processed mail
    bounce_mailbox_timeout: float = 30.0
    bounce_keep_dir: str = "bounces-kept"  # digest bounces receive keeps unreadable mail here

    # Schedule
    schedule_weekday: str = "friday"
    schedule_time: str = "09:00"
    schedule_timezone: str = ""
    schedule_grace_hours: float = 24.0

    @property
    def tz(self) -> ZoneInfo:
        """The publication's time zone."""
        return ZoneInfo(self.timezone)

    @property
    def effective_list_id(self) -> str:
        """The List-Id value: configured, or derived from the From domain."""
        if self.list_id:
            return self.list_id
        domain = self.from_email.rpartition("@")[2] or "localhost"
        return f"weekly.{domain}"

    def replace(self, **changes: Any) -> "Settings":
        """A copy with some fields changed and validated again."""
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new

    def validate(self) -> None:
        """Raise ConfigError for values that cannot work."""
        for name in ("timezone", "schedule_timezone"):
            zone = getattr(self, name)
            if name == "schedule_timezone" and not zone:
                continue
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError, TypeError):
                # zoneinfo's own message is "No time zone found with key …": name the zone.
                raise ConfigError(
                    f"unknown time zone {zone!r} ({name}): use an IANA name such as "
                    "Europe/London or America/New_York"
                ) from None
        if self.schedule_weekday.lower() not in WEEKDAYS:
            raise ConfigError(
                f"schedule_weekday {self.schedule_weekday!r} is not a weekday name; "
                "use one of " + ", ".join(WEEKDAYS)
            )
        if self.smtp_security not in ("none", "starttls", "ssl"):
            raise ConfigError(
                f"smtp_security {self.smtp_security!r} must be one of none, starttls, ssl"
            )
        if self.bounce_mailbox_protocol not in ("imap", "pop3"):
            raise ConfigError(
                f"bounce_mailbox_protocol {self.bounce_mailbox_protocol!r} must be imap or pop3"
            )
        if self.bounce_mailbox_security not in ("ssl", "starttls", "insecure-loopback"):
            raise ConfigError(
                f"bounce_mailbox_security {self.bounce_mailbox_security!r} must be one of "
                "ssl, starttls, insecure-loopback"
            )
        bounce_local, at, _ = self.bounce_address.strip().rpartition("@")
        if self.bounce_address.strip() and (not at or not bounce_local or "+" in bounce_local):
            raise ConfigError(
                f"bounce_address {self.bounce_address!r} must be a plain address like "
                "bounces@news.example.org, without a +tag (VERP adds its own)"
            )
        if self.verp and not self.bounce_address.strip():
            raise ConfigError(
                "verp = true needs bounce_address, e.g. bounces@news.example.org, whose "
                "mail (or a mailbox it is delivered to) digest bounces reads"
            )
        for name in ("section_cap", "total_cap", "send_inflight", "send_batch",
                     "smtp_connections", "send_max_attempts", "bounce_soft_limit",
                     "bounce_soft_days"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if not 0 < self.import_timeout <= 3600:
            raise ConfigError("import_timeout must be more than 0 and at most 3600 seconds")
        if self.import_max_bytes < 1:
            raise ConfigError("import_max_bytes must be at least 1")
        if self.trusted_proxies < 0:
            raise ConfigError("trusted_proxies must be 0 or more (the number of proxies in front)")
        if self.trusted_proxy_address != "*":
            try:
                ipaddress.ip_address(self.trusted_proxy_address)
            except ValueError:
                raise ConfigError(
                    f"trusted_proxy_address {self.trusted_proxy_address!r} must be the IP "
                    "address digest serve sees the proxy connect from (or \"*\" for any)"
                ) from None
        self._validate_look()
        from digest.local_time import SendWindow, parse_deliver_at

        parse_deliver_at(self.deliver_at)
        SendWindow.parse(self.send_window)
        scheme = urlsplit(self.base_url).scheme
        if scheme not in ("http", "https"):
            raise ConfigError(
                f"base_url {self.base_url!r} must start with https:// (or http:// for testing)"
            )


    def _validate_look(self) -> None:
        """Layout, image and theme values: they end up in CSS and HTML attributes."""
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout {self.layout!r} must be one of {', '.join(LAYOUTS)}")
        for name in ("image_width", "image_height", "theme_logo_width"):
            if not 1 <= getattr(self, name) <= 4000:
                raise ConfigError(f"{name} must be between 1 and 4000 (pixels)")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            is_colour = field.name.startswith("theme_") and field.name.endswith(_COLOUR_SUFFIXES)
            if is_colour and not _HEX_COLOUR.fullmatch(value):
                raise ConfigError(
                    f"{field.name} {value!r} is not a colour; write it as #rrggbb or #rgb"
                )
        for name in ("theme_heading_font", "theme_body_font"):
            value = getattr(self, name)
            if not _FONT_STACK.fullmatch(value):
                raise ConfigError(
                    f"{name} {value!r} is not a font stack; write family names separated by "
                    "commas, quoting names with spaces in single quotes: "
                    "Georgia, 'Times New Roman', serif"
                )
        if self.theme_logo_url:
            parts = urlsplit(self.theme_logo_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(
                    f"theme_logo_url {self.theme_logo_url!r} must be an absolute https:// URL"
                )
            if not 1 <= self.theme_logo_height <= 4000:
                raise ConfigError(
                    "theme_logo_height must be set (1 to 4000 pixels) with theme_logo_url, "
                    "so the masthead keeps its size while images load or are blocked"
                )


@dataclasses.dataclass(frozen=True)
class LoadedSettings:
    """Settings plus where each value came from, for ``digest config``."""

    settings: Settings
    sources: Mapping[str, str]
    config_path: Path | None = None  # the settings file that was read, if any


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(Settings)


_KIND_NAMES: dict[Any, str] = {
    str: "a string", int: "a whole number", float: "a number", bool: "true or false",
    tuple[str, ...]: "a list of strings",
}
_TOML_TYPES: dict[type, str] = {
    str: "string", int: "number", float: "number", bool: "boolean", list: "list", dict: "table",
}


def _coerce(name: str, value: Any, kind: Any, origin: str) -> Any:
    """Turn a TOML value or an environment string into the field's type."""
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if kind is int:
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if kind is float:
            return float(value)
        if kind is str:
            if not isinstance(value, str | int | float):
                raise ValueError(value)
            return str(value)
        if typing.get_origin(kind) is tuple:
            if isinstance(value, str):
                # Environment lists are comma separated: DIGEST_SECRET_KEY=new,old
                return tuple(part.strip() for part in value.split(",") if part.strip())
            if isinstance(value, list | tuple):
                if not all(isinstance(v, str | int | float) and not isinstance(v, bool)
                           for v in value):
                    raise ValueError(value)
                return tuple(str(v) for v in value)
            raise ValueError(value)
    except (TypeError, ValueError):
        expected = _KIND_NAMES.get(kind, getattr(kind, "__name__", str(kind)))
        if name in SECRET_FIELDS:
            # A mistyped secret is still a secret: name its type, never its value.
            shown = f"a {_TOML_TYPES.get(type(value), type(value).__name__)} (value hidden)"
        else:
            shown = repr(value)
        raise ConfigError(
            f"{name} from {origin} has an invalid value {shown}: expected {expected}"
        ) from None
    raise ConfigError(f"{name}: unsupported setting type {kind!r}")  # pragma: no cover


def _flatten_toml(data: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """``[smtp] host = "x"`` becomes ``smtp_host``; top-level keys stay as they are."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            for sub, subval in value.items():
                flat[f"{key}_{sub}".replace("-", "_")] = subval
        else:
            flat[key.replace("-", "_")] = value
    known = set(_field_types())
    unknown = sorted(set(flat) - known)
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting(s) {', '.join(unknown)}; "
            "run `digest config` to see the valid names"
        )
    return flat


def load_settings(
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> LoadedSettings:
    """Build the effective settings from every layer, recording each value's source."""
    env = os.environ if env is None else env
    types = _field_types()
    values: dict[str, Any] = {}
    sources: dict[str, str] = {name: "default" for name in types}

    path: Path | None
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(
                f"settings file {path} (--config) "
                + ("is a folder" if path.is_dir() else "does not exist")
                + "; fix the path, or leave out --config to use ./digest.toml"
            )
    else:
        explicit = env.get(ENV_PREFIX + "CONFIG", "").strip()
        path = Path(explicit) if explicit else Path(DEFAULT_CONFIG_FILE)
        if explicit and not path.is_file():
            # Silently using defaults would send with the wrong settings (or none).
            raise ConfigError(
                f"DIGEST_CONFIG names the settings file {path}, which "
                + ("is a folder" if path.is_dir() else "does not exist")
                + "; fix the path, or unset DIGEST_CONFIG to use ./digest.toml"
            )
        if not path.is_file():
            path = None
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        for name, raw in _flatten_toml(data, path).items():
            values[name] = _coerce(name, raw, types[name], str(path))
            sources[name] = str(path)

    for name, kind in types.items():
        key = ENV_PREFIX + name.upper()
        if key in env:
            values[name] = _coerce(name, env[key], kind, key)
            sources[name] = f"env {key}"

    for name, raw in (overrides or {}).items():
        if raw is None:
            continue
        if name not in types:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = _coerce(name, raw, types[name], "command line")
        sources[name] = "command line"

    settings = Settings(**values)
    settings.validate()
    return LoadedSettings(settings=settings, sources=sources, config_path=path)


def mask(name: str, value: Any) -> str:
    """Show a setting for humans, hiding secrets and database passwords."""
    if name in SECRET_FIELDS:
        if not value:
            return "(not set)"
        if isinstance(value, tuple):
            return f"[{len(value)} key(s), hidden]"
        return "(hidden)"
    if name == "database_url":
        return mask_url(str(value))
    if isinstance(value, tuple):
        return ", ".join(value) if value else "(none)"
    return str(value)


def mask_url(url: str) -> str:
    """Replace the password in a database URL with ***."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def describe(loaded: LoadedSettings) -> list[tuple[str, str, str]]:
    """Rows of (name, shown value, source) for every setting."""
    rows = []
    for field in dataclasses.fields(Settings):
        value = getattr(loaded.settings, field.name)
        rows.append((field.name, mask(field.name, value), loaded.sources[field.name]))
    return rows
