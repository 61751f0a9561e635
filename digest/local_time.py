"""Readers' local time: IANA zone names, ``deliver_at = "local 08:00"`` and send windows."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from digest.errors import ConfigError, InputError

#: The zone where each calendar day begins first (Pacific/Kiritimati is UTC+14 all year).
#: A day's first 08:00 happens here, so an issue frozen at 08:00 +14 reaches every reader
#: before their own 08:00. "Etc/GMT-14" means UTC+14: POSIX signs are inverted.
EARLIEST_ZONE = ZoneInfo("Etc/GMT-14")
#: ... and its last 08:00 happens at UTC-12, 26 hours later.
LATEST_ZONE = ZoneInfo("Etc/GMT+12")
#: Longest IANA zone name digest stores ("America/Argentina/ComodRivadavia" is 32).
ZONE_MAX = 64

_CLOCK = r"([01]?\d|2[0-3]):([0-5]\d)"
_DELIVER_AT = re.compile(rf"^local\s+{_CLOCK}$", re.IGNORECASE)
_WINDOW = re.compile(rf"^{_CLOCK}\s*-\s*{_CLOCK}$")
_ZONE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$")


def zone(name: str) -> ZoneInfo | None:
    """The IANA zone called name, or None for a blank, unknown or malformed name."""
    name = name.strip()
    if not name or len(name) > ZONE_MAX or not _ZONE_NAME.match(name):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def clean_zone(name: str | None, *, what: str = "time zone") -> str:
    """A valid IANA zone name as given, or "" for blank; InputError says how to write one."""
    name = (name or "").strip()
    if not name:
        return ""
    if zone(name) is None:
        raise InputError(
            f"{what} {name[:80]!r} is not an IANA time zone name; write it like "
            "Europe/London, America/Los_Angeles or Pacific/Auckland"
        )
    return name


def parse_deliver_at(text: str) -> time | None:
    """``local 08:00`` as 08:00; blank (send at once) as None."""
    if not text.strip():
        return None
    match = _DELIVER_AT.match(text.strip())
    if not match:
        raise ConfigError(
            f"deliver_at {text!r} is not understood; write deliver_at = \"local 08:00\" "
            "(each reader at 08:00 in their time zone), or leave it empty to send at once"
        )
    return time(int(match[1]), int(match[2]))


@dataclass(frozen=True, slots=True)
class SendWindow:
    """Local hours in which mail may go out: ``07:00-20:00``; overnight windows wrap."""

    opens: time
    closes: time

    @classmethod
    def parse(cls, text: str) -> SendWindow | None:
        """``07:00-20:00`` as a window; blank (any hour) as None."""
        if not text.strip():
            return None
        match = _WINDOW.match(text.strip())
        opens, closes = (
            (time(int(match[1]), int(match[2])), time(int(match[3]), int(match[4])))
            if match else (None, None)
        )
        if opens is None or closes is None or opens == closes:
            raise ConfigError(
                f"send_window {text!r} is not understood; write it like \"07:00-20:00\" "
                "(local opening and closing times), or leave it empty to send at any hour"
            )
        return cls(opens, closes)

    def _is_open_at(self, wall: time) -> bool:
        if self.opens < self.closes:
            return self.opens <= wall < self.closes
        return wall >= self.opens or wall < self.closes

    def next_open(self, moment: datetime, tz: ZoneInfo) -> datetime:
        """moment if the window is open then in tz, else when it next opens (UTC)."""
        local = moment.astimezone(tz)
        if self._is_open_at(local.time().replace(tzinfo=None)):
            return moment
        day = local.date()
        for offset in range(3):  # today's opening, or tomorrow's; bounded
            opening = local_moment(day + timedelta(days=offset), self.opens, tz)
            if opening > moment:
                return opening
        raise AssertionError("a daily window opens within two days")  # pragma: no cover


def issue_day(window_end: datetime) -> date:
    """The day an issue is delivered on: its window end's date where days begin first."""
    return window_end.astimezone(EARLIEST_ZONE).date()


def local_moment(day: date, wall: time, tz: ZoneInfo) -> datetime:
    """Wall time on day in tz, in UTC; a time skipped by a DST change resolves an hour later."""
    return datetime.combine(day, wall, tzinfo=tz).astimezone(UTC)
