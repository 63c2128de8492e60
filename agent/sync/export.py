"""The status export: the device's signed status history as a bundle for the hub.

Written to a stick's outbox (``transport.usb``) or sent back over the serial line
(``transport.serial.session``); ``git fetch`` and ``giter-bundle import`` read it.
Only the holder of the state lock writes it (``sync.agent.Agent.write_status_bundle``):
a pack written into the repository must never look like a crash's leftover to the
lock holder's recovery.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from giter_agent.core.log import get_logger
from giter_agent.history.chain_export import reaches
from giter_agent.history.objects import has_object
from giter_agent.state.store import State

if TYPE_CHECKING:
    from giter_agent.history.store import History

log = get_logger("giter.sync")


def write_status_bundle(history: History, state: State, status_ref: bytes, path: Path,
                        hub_has: str | None = None, *, dir_fd: int | None = None) -> bool:
    """Write ``status_ref`` at the state's status tip as a bundle; False if none yet.

    ``hub_has`` is the status commit the hub holds, as the publisher's stick says
    (``transport.hub_status.read_hub_status``): the bundle leaves it and its history
    out, so it stays small however long the device has been reporting. The stick is
    not signed, so the word is only used to leave things out, and only if it names a
    commit the status tip reaches; anything else gets the whole chain. (A hub that
    lacks what it was said to hold refuses the bundle for a missing prerequisite: the
    next stick, with the hub's true word, mends it.) With ``dir_fd``, ``path`` is a
    name in that open folder.
    """
    if not state.status_tip or not state.applied:
        return False
    tip = state.status_tip.encode()
    stop = {state.applied.encode()}
    if hub_has is not None:
        ack = hub_has.encode()
        if has_object(history.object_store, ack) and reaches(history.object_store, tip, ack):
            stop.add(ack)
        else:
            log.info("the stick says the hub holds status %s, which is not in this "
                     "device's status history: writing the whole chain", hub_has[:12])
    # Only the chain back to what the hub holds is read, however long the history.
    history.write_chain_bundle(path, status_ref, tip, stop, dir_fd=dir_fd)
    return True
