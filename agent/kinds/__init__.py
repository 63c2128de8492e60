"""The kinds the agent knows: built-in ones and plug-ins, looked up by ``kind`` name.

Every kind here speaks the ``giter_agent.kinds.base.Kind`` interface; the reconciler never
imports a kind module directly. ``giter_agent.sync.agent.Agent`` calls ``load_kinds`` once at
start; tests call ``builtin_kinds``. Kind modules keep their top level light
(gpiozero and friends are imported when a resource needs them).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from giter_agent.kinds.base import Kind

# kind name -> (module under giter_agent.kinds, class): imported when first used.
BUILTIN: dict[str, tuple[str, str]] = {
    "File": ("file", "FileKind"), "Output": ("output", "OutputKind"),
    "Sensor": ("sensor", "SensorKind"), "Service": ("service", "ServiceKind"),
    "Command": ("command", "CommandKind"), "Agent": ("agent_settings", "AgentKind"),
    "Secret": ("secret", "SecretKind"),
    "MaintenanceWindow": ("maintenance_window", "MaintenanceWindowKind"),
    "Release": ("release", "ReleaseKind"), "Package": ("package", "PackageKind"),
    "AgentUpdate": ("agent_update", "AgentUpdateKind"),
}


def _builtin(name: str) -> Kind:
    module, cls = BUILTIN[name]
    kind: Kind = getattr(importlib.import_module(f"giter_agent.kinds.{module}"), cls)()
    return kind


def builtin_kinds() -> dict[str, Kind]:
    """A fresh registry of the built-in kinds, by ``kind`` name."""
    return {name: _builtin(name) for name in BUILTIN}


def load_kinds(entry_points: Iterable[Any] | None = None) -> dict[str, Kind]:
    """Built-in kinds plus the plug-ins of entry point group ``kinds``."""
    from giter_agent.kinds.plugins import load_plugins

    kinds = builtin_kinds()
    kinds.update(load_plugins(kinds, entry_points))
    return kinds


class Kinds(Mapping[str, Kind]):
    """The agent's kinds, each loaded when first asked for (``Agent`` keeps one).

    A built-in kind's module is imported on first use (a sync of Files never imports
    the Sensor or Service code), and the plug-ins - a scan of every installed package's
    entry points - only when a kind that is not built in is asked for, or the whole
    list is (an ``UnknownKind`` message names every kind). What the registry holds is
    what ``load_kinds`` returns.
    """

    def __init__(self, entry_points: Iterable[Any] | None = None) -> None:
        self._entry_points = entry_points
        self._loaded: dict[str, Kind] = {}
        self._plugins: dict[str, Kind] | None = None

    def _scan(self) -> dict[str, Kind]:
        if self._plugins is None:
            from giter_agent.kinds.plugins import load_plugins

            self._plugins = load_plugins(BUILTIN, self._entry_points)
        return self._plugins

    def __getitem__(self, name: str) -> Kind:
        if name in BUILTIN:
            if name not in self._loaded:
                self._loaded[name] = _builtin(name)
            return self._loaded[name]
        return self._scan()[name]

    def __iter__(self) -> Iterator[str]:
        return iter([*BUILTIN, *self._scan()])

    def __len__(self) -> int:
        return len(BUILTIN) + len(self._scan())
