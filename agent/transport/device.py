"""What a transport needs of the device: the narrow protocol USB and serial code use.

The transports (``usb``, ``serial.*``) sit below the sync layer: they move bundles and
hand them to "the device", which the composition root (``sync.agent.Agent``) is. They
depend on this protocol, never on the ``Agent`` class, so a reader of a transport sees
exactly which five things it touches.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # types only: a transport loads none of these to run
    from giter_agent.config.agent_toml import Config
    from giter_agent.device.board import Board
    from giter_agent.state.store import StateStore
    from giter_agent.status.report import SyncReport


class SyncingDevice(Protocol):
    """The device as a transport sees it."""

    config: Config
    board: Board
    state_store: StateStore
    clock: Callable[[], float]

    def sync(self, bundles: list[Path], source: str) -> SyncReport:
        """Import ``bundles``, apply the newest verified spec, commit status."""
        ...

    def write_status_bundle(self, path: Path, hub_has: str | None = None, *,
                            dir_fd: int | None = None) -> bool:
        """Write the device's status history as a bundle; False if there is none yet
        (``dir_fd``: ``path`` is a name in that open folder)."""
        ...

    def public_key_line(self) -> str:
        """The device key as an allowed_signers line, for enrolment."""
        ...

    def enrolled(self) -> bool:
        """Whether the accepted spec enrols this device's key (else it hands it over)."""
        ...
