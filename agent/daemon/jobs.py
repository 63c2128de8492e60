"""The daemon's jobs: what a trigger asks for and a pass worker is told to run.

Apart from ``daemon.triggers`` (which re-exports them) so that a pass worker, which
reads one job from its request, loads none of what the triggers wait with (inotify,
``select``, ``random``, ``ctypes``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from giter_agent.core.named_tuple import NamedTuple

# Job kinds, in the order the daemon runs them when several are waiting.
USB, NETWORK, RECONCILE = "usb", "network", "reconcile"
WAKEUP = "wakeup"  # the reason of a reconcile a resource asked for (``WakeupTimer``)
PRIORITY = {USB: 0, NETWORK: 1, RECONCILE: 2}


class Job(NamedTuple):
    """One pass to run. A trigger bringing its own kind of pass (a serial peer) gives
    ``run``: it is called on the worker thread with the ``Agent`` and returns the
    ``SyncReport``; it must take the state lock itself (``Agent.sync`` does)."""

    kind: str  # USB | NETWORK | RECONCILE, or a kind a later trigger brings
    arg: str | None = None  # the stick for USB
    reason: str = ""  # why, for the log
    run: Callable[[Any], Any] | None = None
