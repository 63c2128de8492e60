"""The one timestamp format of status documents, receipts and the fleet tools.

UTC, whole seconds, RFC 3339 with a ``Z``: finer would change status for nothing, and
device and publisher must print the same instant the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(ts: float) -> str:
    """``2026-12-04T22:13:11Z`` for a POSIX time."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
