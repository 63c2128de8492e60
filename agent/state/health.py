"""The agent's state in one word, for the people near a board: LED, console, `status`.

``health(...)`` reads the state file's record (last sync, network, conditions,
resources) and says one of:

- ``syncing``  a pass is running right now (only the daemon knows this);
- ``refused``  the last sync refused what it was given (bad signature, rollback,
  fork, unusable spec) or the hub is not the pinned one (host key, TLS): the last good
  spec stays applied, a person must look;
- ``error``    something is broken on this side: a pass failed, a resource is not
  Ready, or the hub will not serve us (credentials, repository, push refused);
- ``offline``  the hub cannot be reached, or no spec has ever been applied;
- ``stale``    the applied spec's ``Expires:`` has passed;
- ``in-sync``  the newest verified spec is applied and every resource is Ready.

The first that applies wins, in that order. ``reason`` and ``message`` say why.
"""

from __future__ import annotations

from typing import Any

from giter_agent.core.named_tuple import NamedTuple
from giter_agent.state.records import NetworkRecord

SYNCING, REFUSED, ERROR, OFFLINE, STALE, IN_SYNC = (
    "syncing", "refused", "error", "offline", "stale", "in-sync")
STATES = (SYNCING, REFUSED, ERROR, OFFLINE, STALE, IN_SYNC)


class Health(NamedTuple):
    state: str  # one of STATES
    reason: str  # CamelCase, as in conditions
    message: str

    def line(self) -> str:
        return f"{self.state}: {self.reason}: {self.message}"


def health(state: Any, *, syncing: bool = False, failure: str | None = None) -> Health:
    """What ``state`` (an ``giter_agent.state.store.State``) means to a person.

    ``syncing``: a pass is running. ``failure``: the daemon's last pass raised
    (the message), which the state file cannot know.
    """
    last = state.last_sync or {}
    net = state.network or NetworkRecord()
    if syncing:
        return Health(SYNCING, "Syncing", "a sync pass is running")
    if last.get("outcome") in ("refused", "invalid-spec"):
        return Health(REFUSED, last.get("reason", "Refused"), last.get("message", ""))
    if net.state == "refused":
        return Health(REFUSED, net.reason or "Refused", net.message or "")
    if failure:
        return Health(ERROR, "PassFailed", failure)
    if net.state == "error":
        return Health(ERROR, net.reason or "HubError", net.message or "")
    not_ready = sorted(key for key, rec in state.resources.items() if not rec.ready)
    if state.applied and not_ready:
        return Health(ERROR, "NotReady", f"not Ready: {', '.join(not_ready)}")
    if net.state == "offline":
        return Health(OFFLINE, net.reason or "Offline",
                      f"{net.message or ''} (since {net.since or '?'})")
    if not state.applied:
        return Health(OFFLINE, "NoSpec", "no spec has been applied yet: waiting for a sync")
    for cond in state.conditions:
        if cond.get("type") == "Stale" and cond.get("status") == "True":
            return Health(STALE, cond.get("reason", "SpecExpired"), cond.get("message", ""))
    return Health(IN_SYNC, "InSync", f"spec {state.applied[:12]} applied, every resource Ready")

