"""Maintenance windows: when a device may *apply* changes (it fetches and verifies always).

A ``MaintenanceWindow`` resource names recurring windows in a time zone (default: the
device's own):

    spec:
      timeZone: Europe/Berlin     # IANA name; default: the device's local time
      windows:
        - days: [Sat, Sun]        # default: every day; the day a window starts
          start: "02:00"
          end: "05:00"            # at or before start: the window runs past midnight
      unknownClock: wait          # or apply: what a board whose clock is not set does

A resource opts in with the common field ``window: <name>``; the ``Agent`` resource's
``window`` is the device-wide default. The reconciler holds a change (a spec not yet in
effect, or a removal) while the window is closed and reports ``OutsideWindow``,
"pending until" the next opening; the spec commit's ``Giter-Urgent:`` trailer (signed
with it; ``trust.trailers.urgent_of``) overrides every window. A clock before the spec
commit's own date, or in 1970, is not trusted: ``WindowUnknown``, unless
``unknownClock: apply``.

One implementation for the device (``reconcile``) and the publisher (``lint``, ``plan``).
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

from giter_agent.core.errors import ResourceError
from giter_agent.core.named_tuple import NamedTuple

KIND = "MaintenanceWindow"
DEFAULT_WINDOW_FIELD = "defaultWindow"  # of the Agent resource: every resource's default
NAME_PATTERN = r"[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?"  # a resource name, as metadata.name
EXEMPT_KINDS = frozenset({KIND, "Agent"})  # the windows' own settings change any time
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
UNKNOWN_CLOCK = ("wait", "apply")
MAX_WINDOWS = 32
# A clock earlier than this is a board that booted without RTC or NTP (the Pi has no
# RTC: it starts at the last shutdown's time, or 1970).
TRUSTED_AFTER = datetime(2024, 1, 1).timestamp()
_HHMM = r"([01][0-9]|2[0-3]):([0-5][0-9])"  # compiled when first used (re's cache)


class Window(NamedTuple):
    """One recurring window: on ``days`` (0 = Monday), from ``start`` for ``length``."""

    days: frozenset[int]
    start: time
    length: timedelta


class Schedule(NamedTuple):
    """A named set of windows in one time zone."""

    name: str
    windows: tuple[Window, ...]
    zone: str | None  # None: the device's local time
    unknown_clock: str = "wait"

    def tz(self) -> tzinfo | None:
        if self.zone is None:
            return None
        from zoneinfo import ZoneInfo

        return ZoneInfo(self.zone)

    def opening(self, now: float) -> tuple[bool, datetime]:
        """(open now, until when) when open; (False, next opening) when closed."""
        tz = self.tz()
        here = datetime.fromtimestamp(now, tz).astimezone(tz)
        today = here.date()
        best: datetime | None = None
        for offset in range(-1, 9):  # a window that began yesterday may still run
            day = today + timedelta(days=offset)
            for w in self.windows:
                if day.weekday() not in w.days:
                    continue
                begin = _local(day, w.start, tz)
                end = begin + w.length
                if begin.timestamp() <= now < end.timestamp():
                    return True, end
                if begin.timestamp() > now and (best is None or begin < best):
                    best = begin
        assert best is not None  # every schedule has a window on some weekday
        return False, best


def _local(day: date, at: time, tz: tzinfo | None) -> datetime:
    if tz is None:
        # The device's local time: let the C library place it (DST included).
        import time as clock

        stamp = clock.mktime((day.year, day.month, day.day, at.hour, at.minute, 0, 0, 0, -1))
        return datetime.fromtimestamp(stamp).astimezone()
    return datetime.combine(day, at, tzinfo=tz)


def _bad(message: str) -> ResourceError:
    return ResourceError(message, reason="InvalidSpec")


def _clock_time(value: Any, where: str) -> time:
    if not isinstance(value, str) or not re.fullmatch(_HHMM, value):
        raise _bad(f"{where} must be a time of day \"HH:MM\" (quote it: YAML reads 02:00 "
                   f"unquoted as a number), not {value!r}")
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def parse_schedule(name: str, spec: dict[str, Any]) -> Schedule:
    """The schedule of a ``MaintenanceWindow`` spec; ``ResourceError`` names the field."""
    zone = spec.get("timeZone")
    if zone is not None:
        if not isinstance(zone, str) or not re.fullmatch(r"[A-Za-z0-9_+\-/]{1,64}", zone):
            raise _bad(f"timeZone must be an IANA time zone name, not {zone!r}")
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise _bad(f"timeZone {zone!r} is not a time zone this system knows "
                       "(IANA names such as Europe/Berlin; Debian's tzdata)") from None
    unknown = spec.get("unknownClock", "wait")
    if unknown not in UNKNOWN_CLOCK:
        raise _bad(f"unknownClock must be one of {', '.join(UNKNOWN_CLOCK)}, not {unknown!r}")
    raw = spec.get("windows")
    if not isinstance(raw, list) or not raw:
        raise _bad("windows must be a non-empty list of {days, start, end}")
    if len(raw) > MAX_WINDOWS:
        raise _bad(f"windows has {len(raw)} entries; at most {MAX_WINDOWS}")
    windows = []
    for i, entry in enumerate(raw):
        where = f"windows[{i}]"
        if not isinstance(entry, dict):
            raise _bad(f"{where} must be a mapping with start and end")
        extra = set(entry) - {"days", "start", "end"}
        if extra:
            raise _bad(f"{where} has unknown field(s) {', '.join(sorted(map(str, extra)))} "
                       "(known: days, start, end)")
        days = entry.get("days", list(DAYS))
        if (not isinstance(days, list) or not days
                or any(not isinstance(d, str) or d.title() not in DAYS for d in days)):
            raise _bad(f"{where}.days must be a list of {', '.join(DAYS)}, not {days!r}")
        start = _clock_time(entry.get("start"), f"{where}.start")
        end = _clock_time(entry.get("end"), f"{where}.end")
        minutes = (end.hour * 60 + end.minute) - (start.hour * 60 + start.minute)
        if minutes <= 0:
            minutes += 24 * 60  # past midnight (an end equal to start: the whole day)
        windows.append(Window(frozenset(DAYS.index(d.title()) for d in days), start,
                              timedelta(minutes=minutes)))
    return Schedule(name, tuple(windows), zone, unknown)


class Gate(NamedTuple):
    """What decides, in one pass, whether a change may be applied now."""

    schedules: dict[str, Schedule]
    default: str | None  # the Agent resource's ``window``: every resource without one
    urgent: str | None  # the spec commit's Giter-Urgent: reason; overrides every window
    spec_time: float | None  # the spec commit's date: a clock before it is not trusted

    def hold(self, window: str | None, now: float) -> tuple[str, str] | None:
        """(reason, message) when a change must wait; None when it may go ahead."""
        name = window or self.default
        if name is None or self.urgent is not None:
            return None
        schedule = self.schedules.get(name)
        if schedule is None:
            return ("UnknownWindow", f"no valid MaintenanceWindow {name!r} in the spec: the "
                    "change waits until there is one (or the spec commit is Giter-Urgent)")
        if not clock_trusted(now, self.spec_time):
            if schedule.unknown_clock == "apply":
                return None
            return ("WindowUnknown", f"the clock ({_utc(now)}) is not set (before 2024 or "
                    f"before the spec commit): window {name!r} cannot be judged, the change "
                    "waits for a set clock (unknownClock: apply would not wait)")
        is_open, when = schedule.opening(now)
        if is_open:
            return None
        return ("OutsideWindow", f"pending until {when.isoformat(timespec='minutes')} "
                f"(maintenance window {name!r})")

    def reopens(self, window: str | None, now: float) -> float | None:
        """When a held change should be tried again (the next opening), if known."""
        schedule = self.schedules.get(window or self.default or "")
        if schedule is None or not clock_trusted(now, self.spec_time):
            return None
        is_open, when = schedule.opening(now)
        return None if is_open else when.timestamp()


def gate_for(specset: Any, *, urgent: str | None, spec_time: float | None) -> Gate:
    """The gate of one pass over ``specset`` (a ``spec.resources.SpecSet``): its valid
    schedules by name and the Agent resource's default window. An invalid schedule is
    left out (its own resource reports why), so what names it waits."""
    schedules, default = specset.derived("windows", _windows)
    return Gate(schedules, default, urgent, spec_time)


def _windows(specset: Any) -> tuple[dict[str, Schedule], str | None]:
    schedules: dict[str, Schedule] = {}
    default: str | None = None
    for res in specset.resources:
        if res.kind == KIND:
            try:
                schedules[res.name] = parse_schedule(res.name, res.spec)
            except ResourceError:
                continue
        elif res.kind == "Agent" and isinstance(res.spec.get(DEFAULT_WINDOW_FIELD), str):
            default = res.spec[DEFAULT_WINDOW_FIELD]
    return schedules, default


def clock_trusted(now: float, spec_time: float | None) -> bool:
    """A clock we may judge a window by: not 1970-ish, not before the spec was made."""
    return now >= TRUSTED_AFTER and (spec_time is None or now >= spec_time)


def _utc(now: float) -> str:
    from giter_agent.core.times import rfc3339

    return rfc3339(now)
