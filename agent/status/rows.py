"""The one renderer of a resource's line, for every place a person reads it.

``giter-agent status``, the USB receipt, the serial console and the demo all print a
resource as ``<Kind/name>  Ready|NOT READY  <Reason>: <message>``; they call this, so a
technician reads the same words on the stick, the console and the admin's terminal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from giter_agent.state.records import ResourceRecord

KEY_WIDTH = 28


def mark(condition: Mapping[str, Any]) -> str:
    """``Ready`` or ``NOT READY`` for a condition (status "True" or anything else)."""
    return "Ready" if condition.get("status") == "True" else "NOT READY"


def resource_rows(records: Mapping[str, ResourceRecord], *, every_condition: bool = False,
                  since: bool = False, indent: str = "  ") -> list[str]:
    """One line per resource (its ``Ready`` condition), sorted by key.

    ``every_condition`` adds a line per further condition (``status``); ``since`` adds
    when each condition last changed.
    """
    lines = []
    for key, rec in sorted(records.items()):
        conditions = rec.conditions
        for cond in conditions if every_condition else conditions[:1]:
            when = f" (since {cond.get('lastTransitionTime')})" if since else ""
            lines.append(f"{indent}{key:<{KEY_WIDTH}} {mark(cond):<10} {cond.get('reason')}: "
                         f"{cond.get('message')}{when}")
    return lines
