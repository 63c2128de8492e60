"""The kinds the agent knows: built-in ones and plug-ins, looked up by ``kind`` name.

Every kind here speaks the ``agent.kinds.base.Kind`` interface; the reconciler never
imports a kind module directly. ``agent.sync.Agent`` calls ``load_kinds`` once at
start; tests call ``builtin_kinds``. Kind modules keep their top level light
(gpiozero and friends are imported when a resource needs them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agent.kinds.agent_settings import AgentKind
from agent.kinds.base import Kind
from agent.kinds.command import CommandKind
from agent.kinds.file import FileKind
from agent.kinds.output import OutputKind
from agent.kinds.sensor import SensorKind
from agent.kinds.service import ServiceKind


def builtin_kinds() -> dict[str, Kind]:
    """A fresh registry of the built-in kinds, by ``kind`` name."""
    return {k.kind: k for k in (FileKind(), OutputKind(), SensorKind(), ServiceKind(),
                                CommandKind(), AgentKind())}


def load_kinds(entry_points: Iterable[Any] | None = None) -> dict[str, Kind]:
    """Built-in kinds plus the plug-ins of entry point group ``giter_agent.kinds``."""
    from agent.kinds.plugins import load_plugins

    kinds = builtin_kinds()
    kinds.update(load_plugins(kinds, entry_points))
    return kinds
