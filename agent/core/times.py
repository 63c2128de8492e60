"""The one timestamp format and the one duration syntax of the device and the tools.

Timestamps: UTC, whole seconds, RFC 3339 with a ``Z``: finer would change status for
nothing, and device and publisher must print the same instant the same way. Durations:
``90``, ``45s``, ``30m``, ``2h``, ``1d``, ``1w`` or ``1h30m`` (``status --diverged-for``,
a rollout's ``timeLimit``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from giter_agent.core.errors import UsageError

_DURATION = r"(\d+)([smhdw]?)"  # compiled when first used (re's cache)
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def rfc3339(ts: float) -> str:
    """``2026-12-04T22:13:11Z`` for a POSIX time."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_duration(text: str) -> int:
    """Seconds from ``90``, ``45s``, ``30m``, ``2h``, ``1d``, ``1w`` or ``1h30m``."""
    spec = text.strip().lower()
    total, pos = 0, 0
    for match in re.finditer(_DURATION, spec):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNIT[match.group(2)]
        pos = match.end()
    if not spec or pos != len(spec):
        raise UsageError(f"{text!r} is not a duration (examples: 90s, 30m, 2h, 1d)",
                         reason="UsageError")
    return total


def span(seconds: float) -> str:
    """``45s``, ``30m``, ``2h15m``, ``3d``: a duration the way ``parse_duration`` reads it."""
    whole = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            rest = whole % size
            return f"{whole // size}{unit}" + (f"{rest // 60}m" if unit == "h" and rest >= 60
                                               else "")
    return f"{whole}s"
