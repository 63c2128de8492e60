"""The order a reconcile pass takes: ``dependsOn`` resolved, dependencies first.

A dependency is ``Kind/name`` or a bare ``name`` that must match exactly one resource.
Items are ordered by Kahn's algorithm, keeping spec order wherever dependencies allow;
items on a cycle are named with the cycle they are on (``DependencyCycle``) and come
last, so a cycle is an error on its members, never a hang. ``reconcile.engine`` runs the
pass in this order and ``reconcile.plan`` shows the same order.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property
from typing import Any

from giter_agent.core.errors import ResourceError
from giter_agent.kinds.base import common_fields
from giter_agent.spec.resources import SpecSet


class Order:
    """The pass order and what ``dependsOn`` resolved to.

    (No ``__slots__``: its derived maps are ``cached_property``s, kept in ``__dict__``.)
    """

    def __init__(self, keys: list[str], deps: dict[str, list[str]], cycles: dict[str, str],
                 problems: dict[str, tuple[str, str]]) -> None:
        self.keys = keys
        self.deps = deps  # key -> resolved dependency keys
        self.cycles = cycles  # key -> the cycle it is on, as "A -> B -> A"
        self.problems = problems  # key -> (reason, message): unresolvable names

    @cached_property
    def dependents(self) -> dict[str, list[str]]:
        """Key -> the keys that depend on it directly (worked out once per order: the
        daemon's wakeup passes over the same spec ask it again and again)."""
        out: dict[str, list[str]] = {}
        for key, deps in self.deps.items():
            for dep in deps:
                out.setdefault(dep, []).append(key)
        return out

    @cached_property
    def position(self) -> dict[str, int]:
        """Key -> its place in ``keys``."""
        return {key: i for i, key in enumerate(self.keys)}


def resolve_order(items: Iterable[tuple[str, str, tuple[str, ...]]],
                  known: Iterable[str] = ()) -> Order:
    """Order ``(key, name, dependsOn)`` items so that dependencies come first.

    A dependency is ``Kind/name`` or a bare ``name`` that must match exactly one
    resource. ``known`` are further keys (invalid resources) a dependency may name:
    they exist, they are just never Ready. Items on a cycle are reported, and items
    that cannot be ordered (on or behind a cycle) come last, in spec order.
    """
    items = list(items)
    keys = [k for k, _, _ in items]
    by_name: dict[str, list[str]] = {}
    for key in [*keys, *known]:
        by_name.setdefault(key.split("/", 1)[1], []).append(key)
    existing = set(keys) | set(known)
    deps: dict[str, list[str]] = {}
    problems: dict[str, tuple[str, str]] = {}
    for key, _name, wanted in items:
        resolved: list[str] = []
        for dep in wanted:
            if "/" in dep:
                target = dep if dep in existing else None
                matches = [dep] if target else []
            else:
                matches = by_name.get(dep, [])
            if not matches:
                problems.setdefault(key, ("DependencyNotFound",
                                          f"dependsOn {dep!r}: no such resource in the spec"))
            elif len(matches) > 1:
                problems.setdefault(key, ("AmbiguousDependency",
                                          f"dependsOn {dep!r} matches {', '.join(matches)}; "
                                          "write Kind/name"))
            else:
                resolved.append(matches[0])
        deps[key] = resolved

    # Kahn's algorithm, always taking the earliest ready item: spec order is kept
    # wherever dependencies allow it.
    index = {k: i for i, k in enumerate(keys)}
    waiting = {k: {d for d in deps[k] if d in index} for k in keys}
    if not any(waiting.values()):
        return Order(keys, deps, {}, problems)  # nothing waits: spec order, no heap
    import heapq  # only when a dependsOn orders something

    dependents: dict[str, list[str]] = {k: [] for k in keys}
    for k, ds in waiting.items():
        for d in ds:
            dependents[d].append(k)
    heap = [index[k] for k in keys if not waiting[k]]
    heapq.heapify(heap)
    ordered: list[str] = []
    while heap:
        k = keys[heapq.heappop(heap)]
        ordered.append(k)
        for child in dependents[k]:
            waiting[child].discard(k)
            if not waiting[child]:
                heapq.heappush(heap, index[child])
    placed = set(ordered)
    stuck = [k for k in keys if k not in placed]
    graph = {k: [d for d in deps[k] if d in index] for k in stuck}
    return Order(ordered + stuck, deps, _cycles(stuck, graph), problems)


def _cycles(nodes: list[str], graph: dict[str, list[str]]) -> dict[str, str]:
    """Each node on a dependency cycle -> that cycle, written from the node round."""
    out: dict[str, str] = {}
    for comp in _strongly_connected(nodes, graph):
        if len(comp) == 1 and comp[0] not in graph[comp[0]]:
            continue  # behind a cycle, not on one
        members = set(comp)
        sub = {n: [d for d in graph[n] if d in members] for n in comp}
        # Walking any edge inside the component must come round: one cycle, named from
        # each of its members; a member off that cycle gets its own shortest one.
        seen: dict[str, int] = {}
        walk: list[str] = []
        node = comp[0]
        while node not in seen:
            seen[node] = len(walk)
            walk.append(node)
            node = sub[node][0]
        loop = walk[seen[node]:]
        for i, member in enumerate(loop):
            out[member] = " -> ".join([*loop[i:], *loop[:i], member])
        for member in comp:
            if member not in out:
                out[member] = " -> ".join(_cycle_through(member, sub) or [member])
    return out


def _strongly_connected(nodes: list[str], graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (a long chain must not
    hit Python's recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)

    for root in nodes:
        if root in index:
            continue
        visit(root)
        work = [(root, iter(graph[root]))]
        while work:
            node, deps = work[-1]
            for dep in deps:
                if dep not in index:
                    visit(dep)
                    work.append((dep, iter(graph[dep])))
                    break
                if dep in on_stack:
                    low[node] = min(low[node], index[dep])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        comp.append(member)
                        if member == node:
                            break
                    comps.append(comp)
    return comps


def _cycle_through(start: str, graph: dict[str, list[str]]) -> list[str] | None:
    """A shortest dependency path from ``start`` back to itself, or None."""
    parent: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for dep in graph.get(node, []):
                if dep == start:
                    path = [node]
                    while (up := parent[path[-1]]) is not None:
                        path.append(up)
                    return [*reversed(path), start]
                if dep not in parent:
                    parent[dep] = node
                    nxt.append(dep)
        frontier = nxt
    return None


def declared_dependencies(spec: Any) -> tuple[str, ...]:
    """``dependsOn`` as far as it is usable for ordering (a bad one fails validation)."""
    try:
        return common_fields(spec).depends_on if isinstance(spec, dict) else ()
    except ResourceError:
        return ()


def spec_order(specset: SpecSet) -> Order:
    """The order a pass over ``specset`` takes (``reconcile.plan`` shows the same)."""
    return resolve_order(((r.key, r.name, declared_dependencies(r.spec))
                          for r in specset.resources),
                         known=[b.key for b in specset.invalid if b.kind and b.name])
