"""``MaintenanceWindow``: named recurring windows in which changes may be applied.

The schedule's rules live in ``giter_agent.spec.windows`` (the publisher's ``lint`` and
``plan`` read them too); the reconciler holds changes of resources that name the window
(``window: <name>``, or the ``Agent`` resource's device-wide ``window``). This kind only
validates the schedule and reports whether it is open and until when, so an operator
sees in status what the board thinks the time is.
"""

from __future__ import annotations

from typing import Any

from giter_agent.kinds.base import Context, Done, Kind, Outcome
from giter_agent.kinds.fields import Field, check_declared
from giter_agent.spec import windows


class MaintenanceWindowKind(Kind):
    kind = windows.KIND
    ACTS = False  # it changes nothing on the device

    DESCRIPTION = ("Recurring windows (days, start, end, time zone) in which resources "
                   "that name it (window: NAME) may change.")
    FIELDS = (
        Field("windows", "array", "the windows: [{days: [Mon..Sun], start: \"HH:MM\", "
              "end: \"HH:MM\"}] (end at or before start: past midnight)", required=True,
              max_items=windows.MAX_WINDOWS,
              items=Field("windows", "object", "one window", properties=(
                  Field("days", "array", "weekdays it starts on (default: every day)",
                        items=Field("days", "string", "a weekday", enum=windows.DAYS)),
                  Field("start", "string", "opens at HH:MM", pattern=r"[0-2][0-9]:[0-5][0-9]"),
                  Field("end", "string", "closes at HH:MM", pattern=r"[0-2][0-9]:[0-5][0-9]"),
              ))),
        Field("timeZone", "string", "IANA time zone (default: the device's local time)",
              max_length=64),
        Field("unknownClock", "string", "when the board's clock is not set: wait (default) "
              "or apply anyway", enum=windows.UNKNOWN_CLOCK, default="wait"),
    )

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        check_declared(spec, self.FIELDS)
        schedule_spec = {k: v for k, v in spec.items() if k not in self.COMMON}
        windows.parse_schedule("-", schedule_spec)  # the rules a Field cannot say
        return schedule_spec

    def apply(self, key: str, spec: dict[str, Any], ctx: Context) -> Outcome:
        schedule = windows.parse_schedule(key.split("/", 1)[1], spec)
        now = ctx.clock()
        if not windows.clock_trusted(now, None):
            return Done("ClockNotSet", "the board's clock is not set: the window cannot be "
                        "judged", {"open": None})
        is_open, when = schedule.opening(now)
        stamp = when.isoformat(timespec="minutes")
        if is_open:
            return Done("Open", f"open until {stamp}", {"open": True, "until": stamp})
        return Done("Closed", f"closed; opens {stamp}", {"open": False, "opens": stamp})

    def plan(self, key: str, spec: dict[str, Any], ctx: Context) -> str | None:
        return None  # nothing on the device changes
