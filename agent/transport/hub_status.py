"""``giter/inbox/hub-status.txt``: what the hub already holds of each status branch.

``giter-bundle create`` writes it (``format_hub_status``) beside the fleet bundle; a
device reads it (``read_hub_status``) to leave those commits out of the status bundle
it writes back. Shared by device and publisher, and free of device code, so the
publisher never loads the device's USB, board or reconcile modules for it.
"""

from __future__ import annotations

import re
from pathlib import Path

from giter_agent.core.layout import HUB_STATUS

_SHA = re.compile(r"[0-9a-f]{40}")


def read_hub_status(inbox: Path) -> dict[str, str]:
    """``inbox/hub-status.txt``: device id -> the status commit the hub holds.

    ``giter-bundle create`` writes it beside the bundle, one ``<device-id> <commit>``
    line per device; ``#`` starts a comment. Lines that are not that are skipped: the
    file only ever makes a status bundle smaller (``Agent.write_status_bundle``).
    """
    try:
        text = (inbox / HUB_STATUS).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    acks: dict[str, str] = {}
    for line in text.splitlines()[:10_000]:
        words = line.split("#", 1)[0].split()
        if len(words) == 2 and _SHA.fullmatch(words[1]):
            acks[words[0]] = words[1]
    return acks


def format_hub_status(acks: dict[str, str]) -> str:
    """The text of ``hub-status.txt`` for ``acks`` (``read_hub_status`` reads it back)."""
    head = ["# What the hub holds of each device's status branch (giter-bundle create).",
            "# A device leaves these commits out of the status bundle it writes back."]
    return "\n".join(head + [f"{device} {sha}" for device, sha in sorted(acks.items())]) + "\n"
