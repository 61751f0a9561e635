"""When the weekly issue is due: scheduled moments in local time, catch-up grace and staleness.

The *period* at a given moment is the one whose scheduled send most recently passed. Its issue
covers the seven local days that end at that scheduled moment, ``[previous send, this send)``,
so consecutive issues tile time with no gap and no overlap, whatever the weekday or the DST
changes in between. It is labelled by the ISO week (in the schedule's time zone) of the
scheduled moment, e.g. ``2025-W47`` for Friday 21 November 2025 09:00.

``digest send --if-due`` sends the current period's issue once; if the machine was down at
the scheduled moment it catches up within ``schedule_grace_hours``; after that the period is
*stale* and is not started (nor resumed) without ``--force``, so that a restored backup does
not send last week's issue again.

With ``deliver_at = "local 08:00"`` the issue is frozen when the issue's day reaches 08:00
first on Earth (UTC+14) and schedule_time is not used: each reader's delivery is then due at
08:00 in their own zone, the last 26 hours later (UTC-12), and staleness counts from there.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from digest.config import WEEKDAYS, Settings
from digest.errors import ConfigError
from digest.issues import Window
from digest.local_time import EARLIEST_ZONE, LATEST_ZONE, local_moment, parse_deliver_at

_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def parse_time(text: str) -> time:
    """``09:00`` (24-hour clock) as a time."""
    match = _TIME.match(text.strip())
    if not match:
        raise ConfigError(f"schedule_time {text!r} is not a time; write it like 09:00 or 17:30")
    return time(int(match[1]), int(match[2]))


@dataclass(frozen=True, slots=True)
class Period:
    """One scheduled send: when it was due, the window its issue covers, when it goes stale."""

    due_at: datetime  # UTC
    window: Window
    stale_at: datetime  # UTC: due_at + grace

    def is_stale(self, now: datetime) -> bool:
        """True once the grace window after the scheduled moment has passed."""
        return now >= self.stale_at


@dataclass(frozen=True, slots=True)
class Schedule:
    """A weekly send at a local weekday and time, with a catch-up grace window."""

    weekday: int  # Monday is 0
    at: time
    tz: ZoneInfo
    grace: timedelta
    # How long after the scheduled moment deliveries may still fall due (the local waves).
    spread: timedelta = timedelta(0)

    @classmethod
    def from_settings(cls, settings: Settings) -> Schedule:
        """The schedule from schedule_weekday/time/timezone (default: timezone)/grace_hours."""
        weekday = settings.schedule_weekday.strip().lower()
        if weekday not in WEEKDAYS:
            raise ConfigError(f"schedule_weekday {settings.schedule_weekday!r} is not a weekday")
        if settings.schedule_grace_hours < 0:
            raise ConfigError("schedule_grace_hours must not be negative")
        grace = timedelta(hours=settings.schedule_grace_hours)
        local = parse_deliver_at(settings.deliver_at)
        if local is not None:
            # The day's first wave is due at once: freeze when that day reaches the hour first.
            day = date(2025, 1, 1)
            spread = local_moment(day, local, LATEST_ZONE) - local_moment(day, local,
                                                                          EARLIEST_ZONE)
            return cls(WEEKDAYS.index(weekday), local, EARLIEST_ZONE, grace, spread)
        return cls(
            weekday=WEEKDAYS.index(weekday),
            at=parse_time(settings.schedule_time),
            tz=ZoneInfo(settings.schedule_timezone or settings.timezone),
            grace=grace,
        )

    def moment_on(self, day: date) -> datetime:
        """The scheduled moment on a local date, in UTC.

        A time inside a spring-forward gap (02:30 on the change day) resolves to the wall
        time an hour later; an ambiguous fall-back time means its first occurrence (fold=0).
        """
        return datetime.combine(day, self.at, tzinfo=self.tz).astimezone(UTC)

    def latest(self, now: datetime) -> datetime:
        """The most recent scheduled moment at or before now, in UTC."""
        today = now.astimezone(self.tz).date()
        day = today - timedelta(days=(today.weekday() - self.weekday) % 7)
        moment = self.moment_on(day)
        if moment > now:
            moment = self.moment_on(day - timedelta(days=7))
        return moment

    def next_runs(self, now: datetime, count: int) -> list[datetime]:
        """The next count scheduled moments strictly after now, in UTC."""
        day = self.latest(now).astimezone(self.tz).date()
        runs: list[datetime] = []
        while len(runs) < count:
            day += timedelta(days=7)
            runs.append(self.moment_on(day))
        return runs

    def window(self, due_at: datetime) -> Window:
        """The issue window for a scheduled moment: the previous moment up to this one."""
        local_day = due_at.astimezone(self.tz).date()
        start = self.moment_on(local_day - timedelta(days=7))
        year, week, _ = local_day.isocalendar()
        return Window(start, due_at.astimezone(UTC), f"{year}-W{week:02d}")

    def period(self, now: datetime) -> Period:
        """The current period: the one whose scheduled moment most recently passed."""
        due = self.latest(now)
        return Period(due_at=due, window=self.window(due),
                      stale_at=due + self.spread + self.grace)


def crontab_line(workdir: str = "/srv/digest", command: str = "digest",
                 config: str | None = None) -> str:
    """A crontab entry that runs the due check every five minutes.

    cron runs it with /bin/sh, a bare PATH and no DIGEST_* variables, in the user's home: so
    the line names the folder, the script and the settings file itself. An unescaped % ends
    a crontab command (crontab(5)), so a % in a path is written \\%.
    """
    parts = [shlex.quote(command)]
    if config:
        parts += ["--config", shlex.quote(config)]
    line = f"cd {shlex.quote(workdir)} && {' '.join(parts)} send --if-due --quiet"
    return "*/5 * * * * " + line.replace("%", "\\%")


def systemd_units(
    workdir: str = "/srv/digest", user: str = "digest", command: str = "/usr/local/bin/digest",
    config: str | None = None,
) -> tuple[str, str]:
    """A (digest-send.service, digest-send.timer) pair equivalent to the crontab line."""
    if config:
        command = f"{command} --config {shlex.quote(config)}"
    service = (
        "[Unit]\n"
        "Description=Send the weekly digest when it is due\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"User={user}\n"
        f"WorkingDirectory={workdir}\n"
        f"ExecStart={command} send --if-due --quiet\n"
    )
    timer = (
        "[Unit]\n"
        "Description=Check every five minutes whether the weekly digest is due\n"
        "\n"
        "[Timer]\n"
        "OnCalendar=*:0/5\n"
        "Persistent=true\n"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    return service, timer
