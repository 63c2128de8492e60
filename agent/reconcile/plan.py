"""A dry run: what a reconcile pass over a spec would change, changing nothing.

Called by ``giter-agent plan`` (``cli.commands.plan``). It walks the resources in
the order the reconciler would (``dependsOn``), validates each one, and asks its
kind's ``plan`` what applying it would change; resources that left the spec are
listed with what pruning would undo. It takes no lock and writes nothing: the
repository is read through a plain object store (no sweep, no refs touched), the
state file is only read, and the ``Context`` it hands to kinds refuses to make pins.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from giter_agent.core.errors import NoPins, ResourceError
from giter_agent.kinds.base import Context, Failed, Kind
from giter_agent.reconcile.engine import check, leaving_resources
from giter_agent.reconcile.holds import held_by_window
from giter_agent.reconcile.order import spec_order
from giter_agent.spec.resources import Resource, SpecSet
from giter_agent.spec.windows import EXEMPT_KINDS, gate_for
from giter_agent.state.records import ResourceRecord

CHANGE, NONE, INVALID, PRUNE, KEEP, UNKNOWN = ("change", "none", "invalid", "prune", "keep",
                                               "unknown")


@dataclass(frozen=True)
class Step:
    """One resource's line of the plan."""

    key: str
    action: str  # change | none | invalid | prune | keep | unknown
    detail: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def refuse_pins(board: Any) -> Any:
    """The pin factory maker of a planning ``Context``: a plan never claims a pin."""
    raise NoPins("a plan must not claim pins; the kind's plan() asked for the pin factory")


def read_spec(repo: Path, commit: str, device_id: str, groups: tuple[str, ...]) -> SpecSet:
    """The device's resources in ``commit``, read without changing the repository.

    ``History`` sweeps stale quarantines when it opens, which only the lock holder may
    do; a plan runs beside a daemon that holds the lock, so it opens the object store
    alone, read-only.
    """
    from dulwich.object_store import DiskObjectStore

    from giter_agent.history.objects import read_commit
    from giter_agent.spec.targeting import read_device_spec

    store = DiskObjectStore(str(repo / "objects"))
    try:
        tree = read_commit(store, commit.encode()).tree
        return read_device_spec(store, tree, device_id, groups)
    finally:
        store.close()


def origin(res: Resource) -> str:
    """`` [from fleet/x.yaml, selector site=north; overrides groups/g/x.yaml]``: where a
    resource came from, when a selector chose it or it beat another definition."""
    parts = []
    if res.selector is not None or res.overrides:
        parts.append(f"from {res.path}" + (f", selector {res.selector}"
                                           if res.selector is not None else ""))
    if res.overrides:
        parts.append(f"overrides {', '.join(res.overrides)}")
    if res.held is not None:
        parts.append(f"baseline version: {res.held}")
    return f" [{'; '.join(parts)}]" if parts else ""


def window_facts(repo: Path, commit: str) -> tuple[str | None, float]:
    """The spec commit's ``Giter-Urgent:`` reason and date (what windows depend on)."""
    from dulwich.object_store import DiskObjectStore

    from giter_agent.history.objects import read_commit
    from giter_agent.trust.trailers import urgent_of

    store = DiskObjectStore(str(repo / "objects"))
    try:
        spec_commit = read_commit(store, commit.encode())
        return urgent_of(spec_commit.message), float(spec_commit.commit_time)
    finally:
        store.close()


@contextlib.contextmanager
def read_artifacts(repo: Path, commit: str, max_bytes: int) -> Iterator[Any]:
    """The artifacts of ``commit``'s tree for ``Context.artifacts`` (what ``File``,
    ``Release`` and ``Package`` read, as the applier hands it over), through a plain
    object store (as ``read_spec``: nothing is swept or written)."""
    from dulwich.object_store import DiskObjectStore

    from giter_agent.history.artifacts import TreeArtifacts
    from giter_agent.history.objects import read_commit

    store = DiskObjectStore(str(repo / "objects"))
    try:
        yield TreeArtifacts(store, read_commit(store, commit.encode()).tree,
                            max_bytes=max_bytes)
    finally:
        store.close()


def plan(specset: SpecSet, ctx: Context, kinds: Mapping[str, Kind],
         previous: dict[str, ResourceRecord], *, urgent: str | None = None,
         spec_time: float | None = None) -> list[Step]:
    """The plan for ``specset`` given the last pass's ``previous`` records; a change
    that a maintenance window holds says until when."""
    gate = gate_for(specset, urgent=urgent, spec_time=spec_time)
    now = ctx.clock()
    ctx.records = previous
    ctx.generations = {r.key: r.generation for r in specset.resources}
    by_key = {r.key: r for r in specset.resources}
    order = spec_order(specset)
    steps: list[Step] = []
    for key in order.keys:
        res = by_key[key]
        checked = check(res, kinds, order)
        if isinstance(checked, Failed):
            steps.append(Step(key, INVALID, f"{checked.reason}: {checked.message}"))
            continue
        kind, common, spec = checked.kind, checked.common, checked.spec
        try:
            change = kind.plan(key, spec, ctx)
        except Exception as exc:  # a kind's plan bug: say so, plan the rest
            steps.append(Step(key, UNKNOWN, f"cannot plan: {type(exc).__name__}: {exc}"))
            continue
        after = order.deps.get(key)
        suffix = (f" (after {', '.join(after)})" if after else "") + origin(res)
        if common.observe_only and kind.ACTS:
            if change is None:
                steps.append(Step(key, NONE, "observe-only; matches the spec" + suffix))
            else:
                steps.append(Step(key, NONE, f"observe-only, would report drift: {change}"
                                  + suffix))
        elif change is None:
            steps.append(Step(key, NONE, "no change" + suffix))
        else:
            held = held_by_window(res.kind, key, kind, common, spec, ctx, gate, now)
            if held is not None:
                suffix += f"; waits: {held.reason}: {held.message}"
            steps.append(Step(key, CHANGE, change + suffix))
    for bad in specset.invalid:
        steps.append(Step(bad.key, INVALID, f"{bad.path}: {bad.reason}: {bad.message}"))

    keys = set(by_key) | {b.key for b in specset.invalid}
    invalid_paths = {b.path for b in specset.invalid}
    for step in leaving_resources(previous, keys, invalid_paths, kinds):
        if step.kept is not None:
            steps.append(Step(step.key, KEEP,
                              f"removed from the spec; its effect stays ({step.kept})"))
        elif step.kind is None:
            steps.append(Step(step.key, PRUNE, "no such kind here: nothing to undo"))
        elif step.spec is None:
            steps.append(Step(step.key, PRUNE, f"nothing valid to undo ({step.problem})"))
        else:
            try:
                detail = step.kind.plan_prune(step.key, step.spec, ctx)
            except ResourceError as exc:
                detail = f"nothing valid to undo ({exc.reason})"
            except Exception as exc:  # a kind's plan bug: say so, plan the rest
                steps.append(Step(step.key, UNKNOWN,
                                  f"cannot plan the prune: {type(exc).__name__}: {exc}"))
                continue
            prev_kind = step.previous.kind
            waits = None if prev_kind in EXEMPT_KINDS else gate.hold(step.window, now)
            if waits is not None:
                detail += f"; waits: {waits[0]}: {waits[1]}"
            steps.append(Step(step.key, PRUNE, detail))
    return steps
