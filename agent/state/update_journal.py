"""The update journal: the agent's own update on trial, recorded before the switch.

``agent-update.journal`` in the state directory (msgpack, replaced atomically by
``core.durable``, as the command and release journals) holds one entry, the last update
of the agent itself (``kinds.agent_update``):

- ``trial``: ``env`` (the environment switched to, a folder under ``agent-envs/``),
  ``version``, ``previous`` (the environment it replaced, None for the installed
  package) and ``previousVersion``, ``deadline`` (clock time by which the new version
  must have written a status commit), ``starts`` (how often the daemon was started in
  it), ``token`` (the spec it answers);
- ``confirmed``: the new version completed a sync and wrote a status commit in time;
- ``rolled-back``: it did not (``reason``, ``message``); the previous environment is
  selected again, and the same spec is not tried again.

The entry, not the ``current`` link, says which environment should run: the link is
made to agree at every start (``wanted``), so a power cut between the journal write and
the link flip leaves the old or the new environment, never neither. Written by
``kinds.agent_update`` (trial), ``sync.applier`` (confirm) and ``cli.boot`` (starts,
roll back).
"""

from __future__ import annotations

from typing import Any

from giter_agent.state.command_journal import CommandJournal

TRIAL, CONFIRMED, ROLLED_BACK = "trial", "confirmed", "rolled-back"
FILE = "agent-update.journal"
# The daemon started this many times in a trial environment without confirming it
# (crashes at start, the watchdog): the next start rolls back.
MAX_TRIAL_STARTS = 2
_KEY = "agent"


class UpdateJournal(CommandJournal):
    """One entry in one small file; every change is durable before the caller goes on."""

    def entry(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None  # the usual case, read at every start: no msgpack to load for it
        return self.get(_KEY)

    def put(self, entry: dict[str, Any]) -> None:
        self._save({_KEY: entry})

    def trial(self) -> dict[str, Any] | None:
        """The entry when an update is on trial, else None."""
        entry = self.entry()
        return entry if entry is not None and entry.get("phase") == TRIAL else None

    def count_start(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Record one more daemon start in the trial environment (durable)."""
        entry = {**entry, "starts": int(entry.get("starts", 0)) + 1}
        self.put(entry)
        return entry

    def confirm(self, env: str | None) -> bool:
        """The trial of ``env`` is over, well: the process running it wrote a status
        commit. False (nothing written) when ``env`` is not on trial."""
        entry = self.trial()
        if entry is None or env is None or entry.get("env") != env:
            return False
        self.put({**entry, "phase": CONFIRMED})
        return True

    def roll_back(self, entry: dict[str, Any], reason: str, message: str) -> dict[str, Any]:
        """End the trial of ``entry`` as failed (durable before the link moves back)."""
        ended = {**entry, "phase": ROLLED_BACK, "reason": reason, "message": message[:2000]}
        self.put(ended)
        return ended


def wanted(entry: dict[str, Any] | None, current: str | None) -> str | None:
    """The environment that should run (None: the installed package), from the journal's
    ``entry`` and, with no update recorded, the ``current`` link."""
    if entry is None:
        return current
    if entry.get("phase") == ROLLED_BACK:
        return entry.get("previous")
    return entry.get("env")


def expired(entry: dict[str, Any], now: float) -> str | None:
    """Why the trial ``entry`` must end now (its deadline passed, or the daemon started in
    it too often without confirming it), or None while it may go on."""
    if now >= float(entry.get("deadline", 0)):
        return (f"giter-agent {entry.get('version')} wrote no status commit before its "
                f"deadline")
    starts = int(entry.get("starts", 0))
    if starts >= MAX_TRIAL_STARTS:
        return (f"giter-agent {entry.get('version')} was started {starts} times without "
                "writing a status commit (it crashed or was killed)")
    return None
