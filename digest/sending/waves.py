"""When each delivery falls due: at once, at the reader's local hour, and inside a send window."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, time
from zoneinfo import ZoneInfo

from digest.config import Settings
from digest.local_time import SendWindow, issue_day, local_moment, parse_deliver_at, zone


@dataclass(frozen=True, slots=True)
class DueTimes:
    """The first moment each reader may be sent an issue: by zone name, else ``default``."""

    default: datetime
    by_zone: dict[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Timing:
    """The settings that decide when mail may go out, parsed once."""

    deliver_at: time | None  # None: at once
    window: SendWindow | None
    publication: ZoneInfo

    @classmethod
    def from_settings(cls, settings: Settings) -> Timing:
        """deliver_at, send_window and timezone from the settings."""
        return cls(parse_deliver_at(settings.deliver_at), SendWindow.parse(settings.send_window),
                   settings.tz)

    @property
    def local(self) -> bool:
        """True when each reader is sent mail at their own local hour."""
        return self.deliver_at is not None

    def reader_zone(self, name: str) -> ZoneInfo:
        """The zone a reader's hours count in: theirs in local mode, else the publication's."""
        if self.local:
            return zone(name) or self.publication
        return self.publication

    def open_at(self, moment: datetime, zone_name: str) -> datetime:
        """moment, or when the reader's send window next opens if it is closed then."""
        if self.window is None:
            return moment
        return self.window.next_open(moment, self.reader_zone(zone_name))

    def due_times(self, window_end: datetime, zones: Iterable[str], now: datetime) -> DueTimes:
        """Each reader's due moment for an issue whose window ends at window_end.

        In local mode a reader is due at deliver_at on the issue's day in their zone (readers
        without one: the publication's zone); a moment already past means now. Then the send
        window moves any moment that falls outside it to the next opening.
        """
        def due_in(tz: ZoneInfo) -> datetime:
            moment = now
            if self.deliver_at is not None:
                moment = max(now, local_moment(issue_day(window_end), self.deliver_at, tz))
            if self.window is not None:
                moment = self.window.next_open(moment, tz)
            return moment

        default = due_in(self.publication)
        by_zone: dict[str, datetime] = {}
        if self.local:
            for name in zones:
                tz = zone(name)
                if tz is not None:
                    by_zone[name] = due_in(tz)
        return DueTimes(default, by_zone)
