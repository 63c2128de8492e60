"""What every kind implements, and the typed outcomes a handler returns.

A kind validates its ``spec`` (schema), applies it to the device, and undoes it when
the resource is pruned. Outcomes are typed by what happens next, as in kopf and
controller-runtime: ``Done`` (Ready), ``Retry`` (try again after N seconds), ``Failed``
(permanent: only a new spec helps). The reconciler turns them into conditions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from agent.board import Board
from agent.errors import ResourceError


@dataclass(frozen=True)
class Done:
    reason: str
    message: str
    observed: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Retry:
    reason: str
    message: str
    after: float = 30.0
    observed: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Failed:
    reason: str
    message: str
    observed: dict[str, Any] = field(default_factory=dict)


Outcome = Done | Retry | Failed


@dataclass
class Context:
    """What handlers may touch, passed in (never global): board, pins, roots, clock."""

    board: Board
    files_roots: tuple[Path, ...]
    pin_factory_maker: Callable[[Board], Any]
    clock: Callable[[], float] = time.time
    # Live gpiozero devices by resource key, so a daemon keeps blinking between passes.
    devices: dict[str, Any] = field(default_factory=dict)
    # Remote overrides of the agent's own settings (the Agent kind writes them; the
    # daemon reads them through agent.settings).
    settings: dict[str, Any] = field(default_factory=dict)
    _factory: Any = None
    _wakeups: list[float] = field(default_factory=list)

    def request_wakeup(self, at: float) -> None:
        """Ask for another pass at time ``at`` (a sensor's next sample, a retry)."""
        self._wakeups.append(at)

    def next_wakeup(self) -> float | None:
        """The earliest requested pass time, or None; requests are consumed by passes."""
        return min(self._wakeups, default=None)

    def clear_wakeups(self) -> None:
        self._wakeups.clear()

    @property
    def pin_factory(self) -> Any:
        if self._factory is None:
            self._factory = self.pin_factory_maker(self.board)
        return self._factory

    def close(self) -> None:
        for dev in self.devices.values():
            dev.close()
        self.devices.clear()


class Kind:
    """Base class of built-in and plug-in kinds."""

    kind: ClassVar[str]
    # Fields every kind accepts; the reconciler, not the kind, acts on them.
    COMMON: ClassVar[frozenset[str]] = frozenset({"prune"})

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Return the normalised spec or raise ``ResourceError`` naming the field."""
        raise ResourceError(f"kind {self.kind} has no schema", reason="InvalidResource")

    def apply(self, key: str, spec: dict[str, Any], ctx: Context) -> Outcome:
        raise ResourceError(f"kind {self.kind} cannot apply", reason="InvalidResource")

    def prune(self, key: str, spec: dict[str, Any], ctx: Context) -> None:
        """Undo the resource's effect on the device (default: nothing to undo)."""


def check_fields(spec: dict[str, Any], required: set[str], optional: set[str]) -> None:
    """Refuse unknown and missing fields, naming them."""
    allowed = required | optional | Kind.COMMON
    unknown = sorted(str(k) for k in spec if k not in allowed)
    if unknown:
        raise ResourceError(f"spec: unknown field(s) {', '.join(unknown)}",
                            reason="InvalidSpec")
    missing = sorted(required - set(spec))
    if missing:
        raise ResourceError(f"spec: missing field(s) {', '.join(missing)}", reason="InvalidSpec")
    if "prune" in spec and not isinstance(spec["prune"], bool):
        raise ResourceError("spec.prune must be true or false", reason="InvalidSpec")


def number(spec: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = spec.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ResourceError(f"spec.{name} must be a number from {lo} to {hi}, got {value!r}",
                            reason="InvalidSpec")
    return float(value)
