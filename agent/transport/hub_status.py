"""``giter/inbox/hub-status.txt``: what the hub already holds of each status branch.

``giter-bundle create`` writes it (``format_hub_status``) beside the fleet bundle; a
device reads it (``read_hub_status``) to leave those commits out of the status bundle
it writes back. Shared by device and publisher, and free of device code, so the
publisher never loads the device's USB, board or reconcile modules for it.
"""

from __future__ import annotations

import re
from pathlib import Path

from giter_agent.config.agent_toml import NAME_RE
from giter_agent.core.durable import UnsafePath, read_regular, shown
from giter_agent.core.layout import HUB_STATUS
from giter_agent.core.log import get_logger

log = get_logger("giter.usb")
_SHA = re.compile(r"[0-9a-f]{40}")
# One short line per device: a fleet of 10 000 fits in 1 MiB.
MAX_HUB_STATUS_BYTES = 2**20


def read_hub_status(inbox: Path, *, dir_fd: int | None = None,
                    dev: int | None = None) -> dict[str, str]:
    """``inbox/hub-status.txt``: device id -> the status commit the hub holds.

    ``giter-bundle create`` writes it beside the bundle, one ``<device-id> <commit>``
    line per device; ``#`` starts a comment. Lines that are not that are skipped: the
    file only ever makes a status bundle smaller (``Agent.write_status_bundle``). It
    comes from a stick, so it is read only if it is a regular file (no link, FIFO or
    device) of at most ``MAX_HUB_STATUS_BYTES``; otherwise it is ignored, with a
    warning. With ``dir_fd`` (the inbox, opened by ``transport.usb.Stick``), the name
    is looked up in that open folder, and ``dev`` is the filesystem it must be on.
    """
    name = HUB_STATUS if dir_fd is not None else inbox / HUB_STATUS
    try:
        data = read_regular(name, MAX_HUB_STATUS_BYTES, dir_fd=dir_fd, dev=dev)
    except UnsafePath as exc:
        log.warning("%s/%s ignored: %s", shown(str(inbox)), HUB_STATUS, exc.strerror)
        return {}
    except OSError:
        return {}
    acks: dict[str, str] = {}
    for line in data.decode("utf-8", errors="replace").splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) == 2 and NAME_RE.fullmatch(words[0]) and _SHA.fullmatch(words[1]):
            acks[words[0]] = words[1]
    return acks


def format_hub_status(acks: dict[str, str]) -> str:
    """The text of ``hub-status.txt`` for ``acks`` (``read_hub_status`` reads it back)."""
    head = ["# What the hub holds of each device's status branch (giter-bundle create).",
            "# A device leaves these commits out of the status bundle it writes back."]
    return "\n".join(head + [f"{device} {sha}" for device, sha in sorted(acks.items())]) + "\n"
