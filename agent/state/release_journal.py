"""The release journal: a Release switch is recorded, durably, before the link moves.

``releases.journal`` in the state directory (msgpack, replaced atomically, as the
command journal it extends) holds, per Release resource, the switch in progress: the
release it leaves (``from``: the ``current`` link's text, or None), the one it goes
to, the attempt count, and the phase: ``switching`` (the link may point at either),
``rolling-back`` (the check failed; its result is kept), or ``finished`` (the result,
until the state file holds it). A pass that finds ``switching`` or ``rolling-back``
puts ``from`` back in place first, so a power cut at any instant of a switch leaves
the old release or the new one, and the next pass finishes the rollback or tries the
switch again (a bounded number of times).

Used by ``kinds.release``; built by ``sync.agent`` for the agent's state directory.
"""

from __future__ import annotations

from typing import Any

from giter_agent.state.command_journal import CommandJournal

SWITCHING, ROLLING_BACK, FINISHED = "switching", "rolling-back", "finished"


class ReleaseJournal(CommandJournal):
    """One small file; every entry is durable before the caller goes on."""

    def put(self, key: str, entry: dict[str, Any]) -> None:
        entries = self._load()
        entries[key] = entry
        self._save(entries)
