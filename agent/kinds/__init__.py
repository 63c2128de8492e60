"""The kinds the agent knows: built-in ones, looked up by ``kind`` name.

Every kind here speaks the ``agent.kinds.base.Kind`` interface; the reconciler never
imports a kind module directly.
"""

from __future__ import annotations

from agent.kinds.base import Kind
from agent.kinds.file import FileKind
from agent.kinds.output import OutputKind


def builtin_kinds() -> dict[str, Kind]:
    """A fresh registry of the built-in kinds, by ``kind`` name."""
    return {k.kind: k for k in (FileKind(), OutputKind())}
