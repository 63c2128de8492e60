"""A dry run: what a reconcile pass over a spec would change, changing nothing.

Called by ``giter-agent plan`` (``cli.commands.plan``). It walks the resources in
the order the reconciler would (``dependsOn``), validates each one, and asks its
kind's ``plan`` what applying it would change; resources that left the spec are
listed with what pruning would undo. It takes no lock and writes nothing: the
repository is read through a plain object store (no sweep, no refs touched), the
state file is only read, and the ``Context`` it hands to kinds refuses to make pins.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from giter_agent.core.errors import GiterError, ResourceError
from giter_agent.kinds.base import Context, Kind, common_fields
from giter_agent.reconcile.engine import leaving, spec_order
from giter_agent.spec.resources import SpecSet, prefixes, select

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


class NoPins(GiterError):
    """A kind asked for a pin during a plan (plans must not claim pins)."""

    reason = "PlanTouchesPins"


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

    from giter_agent.history.tree import iter_files

    store = DiskObjectStore(str(repo / "objects"))
    try:
        tree = store[commit.encode()].tree
        files: list[tuple[str, bytes]] = []
        for prefix in prefixes(device_id, groups):
            files.extend(iter_files(store, tree, prefix, max_blob=2 * 2**20))
    finally:
        store.close()
    return select(files)


def plan(specset: SpecSet, ctx: Context, kinds: dict[str, Kind],
         previous: dict[str, dict[str, Any]]) -> list[Step]:
    """The plan for ``specset`` given the last pass's ``previous`` records."""
    ctx.records = previous
    ctx.generations = {r.key: r.generation for r in specset.resources}
    by_key = {r.key: r for r in specset.resources}
    order = spec_order(specset)
    steps: list[Step] = []
    for key in order.keys:
        res = by_key[key]
        kind = kinds.get(res.kind)
        if kind is None:
            steps.append(Step(key, INVALID, f"UnknownKind: no kind {res.kind!r} on this agent"))
            continue
        try:
            common = common_fields(res.spec)
            spec = kind.validate(dict(res.spec))
        except ResourceError as exc:
            steps.append(Step(key, INVALID, f"{exc.reason}: {exc}"))
            continue
        if key in order.cycles:
            steps.append(Step(key, INVALID, f"DependencyCycle: {order.cycles[key]}"))
            continue
        if key in order.problems:
            steps.append(Step(key, INVALID, ": ".join(order.problems[key])))
            continue
        try:
            change = kind.plan(key, spec, ctx)
        except Exception as exc:  # a kind's plan bug: say so, plan the rest
            steps.append(Step(key, UNKNOWN, f"cannot plan: {type(exc).__name__}: {exc}"))
            continue
        after = order.deps.get(key)
        suffix = f" (after {', '.join(after)})" if after else ""
        if common.observe_only and kind.ACTS:
            if change is None:
                steps.append(Step(key, NONE, "observe-only; matches the spec" + suffix))
            else:
                steps.append(Step(key, NONE, f"observe-only, would report drift: {change}"
                                  + suffix))
        elif change is None:
            steps.append(Step(key, NONE, "no change" + suffix))
        else:
            steps.append(Step(key, CHANGE, change + suffix))
    for bad in specset.invalid:
        steps.append(Step(bad.key, INVALID, f"{bad.path}: {bad.reason}: {bad.message}"))

    keys = set(by_key) | {b.key for b in specset.invalid}
    for key, prev in leaving(previous, keys, {b.path for b in specset.invalid}):
        try:
            common = common_fields(prev["spec"])
        except ResourceError:
            common = None
        if common is not None and (not common.prune or common.observe_only):
            why = "prune: false" if not common.prune else "observe-only"
            steps.append(Step(key, KEEP, f"removed from the spec; its effect stays ({why})"))
            continue
        kind = kinds.get(prev["kind"])
        try:
            detail = kind.plan_prune(key, kind.validate(dict(prev["spec"])), ctx) \
                if kind is not None else "no such kind here: nothing to undo"
        except ResourceError as exc:
            detail = f"nothing valid to undo ({exc.reason})"
        steps.append(Step(key, PRUNE, detail))
    return steps
