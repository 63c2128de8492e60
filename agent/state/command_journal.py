"""The command journal: a Command is recorded as started, durably, before it runs.

``commands.journal`` in the state directory (msgpack, replaced atomically by
``core.durable``) holds, per Command resource, the run it is about: its token (the
generation or spec it runs for), ``started`` with the time, or ``finished`` with the
result. The state file only learns of a run when the pass ends; if the agent dies in
between (power cut, the watchdog, an OOM kill), the next pass finds ``started`` and
reports the run as interrupted instead of starting the command a second time, or
finds ``finished`` and reports the result it already had. An entry is dropped once
the state file holds the result.

Used by ``kinds.command``; built by ``sync.agent`` for the agent's state directory.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from giter_agent.core.durable import atomic_write

STARTED, FINISHED = "started", "finished"


class CommandJournal:
    """One small file; every change is written (and fsynced) before the caller goes on."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _load(self) -> dict[str, dict[str, Any]]:
        import msgpack

        try:
            raw = msgpack.unpackb(self.path.read_bytes(), raw=False, strict_map_key=True)
        except FileNotFoundError:
            return {}
        except Exception:
            # Unreadable (a disk that lied about a write): the safe reading is that every
            # command may have been started, which the callers cannot know; an empty
            # journal at worst repeats a run, as before the journal existed.
            return {}
        return raw if isinstance(raw, dict) else {}

    def _save(self, entries: dict[str, dict[str, Any]]) -> None:
        import msgpack

        if not entries:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        atomic_write(self.path, msgpack.packb(entries, use_bin_type=True), mode=0o600)

    def get(self, key: str) -> dict[str, Any] | None:
        entry = self._load().get(key)
        return entry if isinstance(entry, dict) else None

    def started(self, key: str, token: str, at: float) -> None:
        """Record that ``key`` is about to run for ``token`` (durable on return)."""
        entries = self._load()
        entries[key] = {"token": token, "phase": STARTED, "at": at}
        self._save(entries)

    def finished(self, key: str, token: str, result: dict[str, Any]) -> None:
        entries = self._load()
        entries[key] = {"token": token, "phase": FINISHED, "result": result}
        self._save(entries)

    def forget(self, key: str) -> None:
        entries = self._load()
        if entries.pop(key, None) is not None:
            self._save(entries)
