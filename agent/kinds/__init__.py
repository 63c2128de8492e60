"""The kinds the agent knows: built-in ones and plug-ins, looked up by ``kind`` name.

Every kind here speaks the ``giter_agent.kinds.base.Kind`` interface; the reconciler never
imports a kind module directly. ``giter_agent.sync.agent.Agent`` calls ``load_kinds`` once at
start; tests call ``builtin_kinds``. Kind modules keep their top level light
(gpiozero and friends are imported when a resource needs them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from giter_agent.kinds.agent_settings import AgentKind
from giter_agent.kinds.base import Kind
from giter_agent.kinds.command import CommandKind
from giter_agent.kinds.file import FileKind
from giter_agent.kinds.maintenance_window import MaintenanceWindowKind
from giter_agent.kinds.output import OutputKind
from giter_agent.kinds.package import PackageKind
from giter_agent.kinds.release import ReleaseKind
from giter_agent.kinds.secret import SecretKind
from giter_agent.kinds.sensor import SensorKind
from giter_agent.kinds.service import ServiceKind


def builtin_kinds() -> dict[str, Kind]:
    """A fresh registry of the built-in kinds, by ``kind`` name."""
    return {k.kind: k for k in (FileKind(), OutputKind(), SensorKind(), ServiceKind(),
                                CommandKind(), AgentKind(), SecretKind(),
                                MaintenanceWindowKind(), ReleaseKind(), PackageKind())}


def load_kinds(entry_points: Iterable[Any] | None = None) -> dict[str, Kind]:
    """Built-in kinds plus the plug-ins of entry point group ``kinds``."""
    from giter_agent.kinds.plugins import load_plugins

    kinds = builtin_kinds()
    kinds.update(load_plugins(kinds, entry_points))
    return kinds
