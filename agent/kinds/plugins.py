"""Plug-in kinds: ``Kind`` subclasses other packages publish as Python entry points.

Called once by ``kinds.load_kinds`` when an ``Agent`` starts (never at import,
so ``importlib.metadata`` is only read then). A package declares, in its
``pyproject.toml``::

    [project.entry-points."giter_agent.kinds"]
    Lamp = "acme_lamp:LampKind"

The entry point's name is the ``kind`` its resources use. A plug-in that fails to
load - an import error, not a ``Kind``, a name that is not its ``kind``, the name of
a built-in kind - is logged and fails alone: its resources get ``Ready=False`` with
``PluginFailed`` and the reason, and every other kind works as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from giter_agent.core.errors import ResourceError
from giter_agent.core.log import get_logger
from giter_agent.kinds.base import Context, Kind, Outcome

GROUP = "giter_agent.kinds"
KIND_NAME_RE = re.compile(r"[A-Z][A-Za-z0-9]{0,62}")

log = get_logger("giter.kinds.plugins")


class BrokenKind(Kind):
    """Stands in for a plug-in that did not load: every resource of it fails, saying why."""

    def __init__(self, name: str, problem: str) -> None:
        self.kind = name
        self.problem = problem

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        raise ResourceError(f"the plug-in for kind {self.kind} failed to load: {self.problem}",
                            reason="PluginFailed")

    def apply(self, key: str, spec: dict[str, Any], ctx: Context) -> Outcome:
        raise ResourceError(self.problem, reason="PluginFailed")


def _load_one(ep: Any) -> Kind:
    obj = ep.load()
    kind = obj() if isinstance(obj, type) else obj
    if not isinstance(kind, Kind):
        raise TypeError(f"{ep.value} is not a giter_agent Kind (subclass "
                        "giter_agent.kinds.base.Kind)")
    if getattr(kind, "kind", None) != ep.name:
        raise ValueError(f"{ep.value} has kind {getattr(kind, 'kind', None)!r}, but its entry "
                         f"point is named {ep.name!r}")
    return kind


def load_plugins(builtin: Iterable[str], entry_points: Iterable[Any] | None = None
                 ) -> dict[str, Kind]:
    """Plug-in kinds by name, each loaded or replaced by a ``BrokenKind``."""
    if entry_points is None:
        from importlib.metadata import entry_points as find

        entry_points = find(group=GROUP)
    builtin = set(builtin)
    out: dict[str, Kind] = {}
    for ep in entry_points:
        name = ep.name
        if name in builtin:
            log.error("plug-in %s = %s ignored: %s is a built-in kind", name, ep.value, name)
            continue
        if not KIND_NAME_RE.fullmatch(name):
            log.error("plug-in %r = %s ignored: a kind name is CamelCase letters and digits",
                      name, ep.value)
            continue
        if name in out:
            problem = f"two plug-ins claim kind {name} ({ep.value} and another)"
            log.error("%s", problem)
            out[name] = BrokenKind(name, problem)
            continue
        try:
            out[name] = _load_one(ep)
        except Exception as exc:  # any failure of someone else's code fails that kind only
            problem = f"{type(exc).__name__}: {exc}"
            log.error("plug-in kind %s (%s) failed to load: %s", name, ep.value, problem)
            out[name] = BrokenKind(name, problem)
        else:
            log.info("plug-in kind %s loaded from %s", name, ep.value)
    return out
