"""What one sync did: the records the CLI, the receipt, the console and status all read.

``sync.agent`` makes a ``SyncReport`` per pass, one ``BundleVerdict`` per bundle (or
fetch); the transports (USB receipt, serial session) and the CLI only read them, so
they sit below the sync layer and import this, never the ``Agent`` itself.
"""

from __future__ import annotations

from giter_agent.core.named_tuple import NamedTuple
from giter_agent.state.records import NetworkRecord, ResourceRecord

__all__ = ["EXIT_NOT_READY", "EXIT_OFFLINE", "EXIT_OK", "EXIT_REFUSED", "EXIT_USAGE",
           "BundleVerdict", "SyncReport"]

# Exit codes of `giter-agent sync` (documented in the README).
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NOT_READY, EXIT_OFFLINE = 0, 1, 2, 3, 4
# `giter-agent run` ends with this (EX_TEMPFAIL) when an AgentUpdate selected another
# version of the agent: systemd's Restart=on-failure starts the selected one.
EXIT_RESTART = 75


class BundleVerdict(NamedTuple):
    """What happened to one bundle file (or one fetch: ``file`` is then the hub's URL)."""

    file: str
    verdict: str  # applied | up-to-date | refused | unusable
    reason: str
    message: str


_REPORT_FIELDS = ("outcome", "reason", "message", "accepted", "applied", "status_commit",
                  "bundles", "not_ready", "resources", "stale", "network")


class SyncReport:
    """The outcome of one pass, for the CLI, the receipt and the status summary."""

    __slots__ = _REPORT_FIELDS

    def __init__(self, outcome: str, reason: str, message: str, accepted: str | None = None,
                 applied: str | None = None, status_commit: str | None = None,
                 bundles: list[BundleVerdict] | None = None,
                 not_ready: list[str] | None = None,
                 resources: dict[str, ResourceRecord] | None = None,
                 stale: str | None = None, network: NetworkRecord | None = None) -> None:
        # applied | up-to-date | refused | unusable | no-bundles | invalid-spec, and for
        # the network: offline (the hub could not be reached) | error (it would not
        # serve us)
        self.outcome = outcome
        self.reason = reason
        self.message = message
        self.accepted = accepted
        self.applied = applied
        self.status_commit = status_commit
        self.bundles: list[BundleVerdict] = [] if bundles is None else bundles
        self.not_ready: list[str] = [] if not_ready is None else not_ready
        self.resources: dict[str, ResourceRecord] = {} if resources is None else resources
        self.stale = stale  # why the applied spec is stale (its Expires: has passed)
        self.network = network  # the hub as last seen (state.network), if any

    def __repr__(self) -> str:  # what a failed test shows
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in _REPORT_FIELDS)
        return f"SyncReport({shown})"

    @property
    def exit_code(self) -> int:
        if self.outcome in ("refused", "unusable", "no-bundles", "invalid-spec"):
            return EXIT_REFUSED
        if self.outcome in ("offline", "error"):
            return EXIT_OFFLINE
        return EXIT_NOT_READY if self.not_ready else EXIT_OK
