"""One level-based reconcile pass over the resources of the applied spec.

Called by ``giter_agent.sync.agent.Agent`` (every sync and every timer pass) and, for ordering
only, by ``reconcile.plan``. The pass is told *which* resources exist, never *what
happened*: for each one it validates the spec against its kind's schema, applies it,
and always produces a status (also on failure), as controller-runtime does.

What the reconciler owns, so that no kind has to:
- the common spec fields (``Kind.COMMON``): ``dependsOn`` orders the pass (a cycle
  is a ``DependencyCycle`` error on its members, never a hang; a dependency that is
  not Ready leaves its dependents at ``DependencyNotReady``), ``reconcile:
  observe-only`` turns acting into reporting, ``prune: false`` keeps the effect;
- ``Ready``, summarised from the outcome and the kind's own conditions, and
  ``observedGeneration``, written only when that generation finished;
- backoff: a resource that keeps asking to retry is tried after 1x, 2x, 4x ... its
  delay (capped), and not on the passes in between;
- drift: when a resource that was in effect needed correcting although its spec did
  not change, ``status.drift`` records when and what;
- pruning of resources that left the spec, dependents first.
A bad resource fails alone; the rest still apply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from operator import attrgetter
from typing import Any

from giter_agent.core.errors import ResourceError
from giter_agent.core.log import get_logger
from giter_agent.core.named_tuple import NamedTuple
from giter_agent.kinds.base import (
    Common,
    Condition,
    Context,
    Done,
    Failed,
    Kind,
    Outcome,
    Retry,
    common_fields,
    fingerprint,
    rfc3339,
)
from giter_agent.reconcile.holds import HELD, held_by_window, keep_in_effect
from giter_agent.reconcile.order import Order, declared_dependencies, resolve_order, spec_order
from giter_agent.spec.resources import Invalid, Resource, SpecSet
from giter_agent.spec.windows import EXEMPT_KINDS, Gate, gate_for
from giter_agent.state.records import Backoff, ResourceRecord

log = get_logger("giter.reconcile")

# Backoff: the kind's delay doubles with each consecutive retry of the same spec, up
# to this cap (unless the kind itself asked for longer).
MAX_BACKOFF_S = 3600.0
MIN_RETRY_S = 1.0  # a kind asking to retry at once must not spin the daemon
# How many corrections a drift record lists (the newest pass's, one line each).
MAX_DRIFT_CHANGES = 8
# Retries that wait on something other than time, so are asked again at every pass: a
# dependency (its own passes decide), the agent restarting into a new version of itself
# (``AgentUpdate``: the new process must look at once, not after a backoff).
NO_BACKOFF = ("DependencyNotReady", "Restarting")


class PassResult:
    """Status records by resource key, plus what the pass pruned."""

    __slots__ = ("pruned", "records", "retry_after")

    def __init__(self, records: dict[str, ResourceRecord] | None = None,
                 pruned: list[str] | None = None, retry_after: float | None = None) -> None:
        self.records: dict[str, ResourceRecord] = {} if records is None else records
        self.pruned: list[str] = [] if pruned is None else pruned
        self.retry_after = retry_after

    @property
    def not_ready(self) -> list[str]:
        return [k for k, r in self.records.items() if not r.ready]


def _since(previous: ResourceRecord | None, ctype: str, status: str, now: float) -> str:
    # lastTransitionTime moves only when the condition's status flips.
    for cond in previous.conditions if previous is not None else []:
        if cond.get("type") == ctype and cond.get("status") == status:
            return str(cond.get("lastTransitionTime", rfc3339(now)))
    return rfc3339(now)


def _condition(ctype: str, ok: bool, reason: str, message: str, now: float,
               previous: ResourceRecord | None) -> dict[str, Any]:
    status = "True" if ok else "False"
    return {"type": ctype, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": _since(previous, ctype, status, now)}


# -- ordering -----------------------------------------------------------------------------

# -- the pass -----------------------------------------------------------------------------

def reconcile(specset: SpecSet, ctx: Context, kinds: Mapping[str, Kind],
              previous: dict[str, ResourceRecord], spec_commit: str,
              clock: Callable[[], float] | None = None, *, urgent: str | None = None,
              spec_time: float | None = None, only: set[str] | None = None,
              order: Order | None = None) -> PassResult:
    """Apply every resource of ``specset``; prune what ``previous`` had and it lacks.

    ``urgent`` (the spec commit's ``Giter-Urgent:`` reason) and ``spec_time`` (its date)
    steer the maintenance windows (``spec.windows``).

    ``only``: a wakeup pass (the daemon's, when resources asked for one): just these
    resources and those that depend on them are visited; every other one keeps its
    record from ``previous`` and its own wakeup. That holds only when ``previous`` is
    a pass over this very spec; otherwise the pass is a full one. ``order``: the
    ``spec_order`` of ``specset``, when the caller kept it from an earlier pass.
    """
    now = (clock or ctx.clock)()
    gate = gate_for(specset, urgent=urgent, spec_time=spec_time)
    out = PassResult()
    ctx.records = previous
    ctx.generations = specset.generations
    by_key = specset.by_key
    order = order or spec_order(specset)
    visit: set[str] | None = None
    if only is not None and _same_spec(specset, by_key, previous, spec_commit):
        visit = _with_dependents(only, order)
        ctx.clear_wakeups(visit)  # the visited ones ask afresh; the rest keep theirs
    else:
        ctx.clear_wakeups()  # each pass asks afresh for what it needs next
    if visit is not None:
        # The same spec: every record not visited stays as it is, the very same object
        # (records are values), in the place it had; only the visited ones are gone over.
        out.records = dict(previous)
        keys: Iterable[str] = sorted(visit, key=order.position.__getitem__)
    else:
        keys = order.keys
    for key in keys:
        ctx.current = key  # a wakeup asked for now is this resource's
        try:
            out.records[key] = _reconcile_one(by_key[key], previous.get(key), ctx, kinds,
                                              order, out, spec_commit, now, gate)
        finally:
            ctx.current = None
    if visit is not None:
        return out  # the same spec: nothing left it, nothing to prune (invalid ones kept)

    for bad in specset.invalid:
        key = _invalid_key(bad, by_key)
        prev = previous.get(key) or _previous_at(previous, bad.path)
        # The last good spec of this file stays applied - over any number of passes -
        # unless the resource it held now applies from another file.
        held = f"{prev.kind}/{prev.name}" if prev else None
        keep = (prev is not None and prev.spec is not None and bad.key not in by_key
                and held not in by_key)
        message = bad.message + ("; the last valid spec stays applied" if keep else "")
        status = {"specCommit": spec_commit,
                  "conditions": [_condition("Ready", False, bad.reason, message, now, prev)]}
        if keep and prev is not None:
            # Remember the last good spec (and its kind) so a later removal prunes it.
            record = ResourceRecord(prev.kind, prev.name, bad.path, status, spec=prev.spec,
                                    document=prev.document, invalid=True)
        else:
            record = ResourceRecord(bad.kind, bad.name, bad.path, status, invalid=True)
        out.records[key] = record

    _prune(previous, out, ctx, kinds, gate)
    return out


def _invalid_key(bad: Invalid, by_key: dict[str, Resource]) -> str:
    # A duplicate shares its key with the resource that applies: file it by path.
    return f"file/{bad.path}" if bad.key in by_key else bad.key


def _same_spec(specset: SpecSet, by_key: dict[str, Resource],
               previous: dict[str, ResourceRecord], spec_commit: str) -> bool:
    """Is ``previous`` a pass over exactly this spec (so a wakeup pass may keep it)?"""
    keys = specset.derived("record keys", lambda s: set(by_key) | {
        _invalid_key(bad, by_key) for bad in s.invalid})
    if previous.keys() != keys:
        return False
    # Every wakeup pass asks this of every record: map() keeps the loop out of Python,
    # and each record worked out its status's specCommit when it was made.
    return set(map(_SPEC_COMMIT, previous.values())) <= {spec_commit}


_SPEC_COMMIT = attrgetter("spec_commit")


def _with_dependents(keys: set[str], order: Order) -> set[str]:
    """``keys`` and every resource that depends on one of them, however indirectly:
    a dependency that changed may change whether its dependents can go ahead."""
    dependents = order.dependents
    out: set[str] = set()
    todo = [k for k in keys if k in order.deps]
    while todo:
        key = todo.pop()
        if key not in out:
            out.add(key)
            todo.extend(dependents.get(key, ()))
    return out


def _previous_at(previous: dict[str, ResourceRecord], path: str) -> ResourceRecord | None:
    for rec in previous.values():
        if rec.path == path:
            return rec
    return None


def _reconcile_one(res: Resource, prev: ResourceRecord | None, ctx: Context,
                   kinds: Mapping[str, Kind], order: Order, out: PassResult, spec_commit: str,
                   now: float, gate: Gate) -> ResourceRecord:
    # Records are values (state.records): this one is built from these fields at the end.
    rec_spec: dict[str, Any] | None = res.spec
    rec_document: dict[str, Any] | None = res.document
    rec_fingerprint: str | None = None
    rec_backoff: Backoff | None = None
    # The spec too: a values file can change what a document renders to (spec.targeting).
    same_document = (prev is not None and prev.document == res.document
                     and prev.spec == res.spec)
    memory = prev.memory if prev is not None and prev.memory else None

    backoff = prev.backoff if prev is not None and same_document else None
    if prev is not None and backoff is not None and backoff.not_before > now:
        # Backing off: this pass leaves the resource alone and repeats what it said.
        repeated = dict(prev.status)
        repeated["specCommit"] = spec_commit
        ctx.request_wakeup(backoff.not_before)
        _note_retry(out, backoff.not_before - now)
        return ResourceRecord(res.kind, res.name, res.path, repeated, spec=rec_spec,
                              document=rec_document, memory=memory, backoff=backoff)

    outcome, spec = _evaluate(res, kinds, ctx, order, out, gate, now)
    fp = fingerprint(spec) if spec is not None else None
    in_effect_before = (fp is not None and prev is not None and prev.ready
                        and prev.fingerprint == fp)

    # Ready, summarised: the outcome says whether the spec is in effect, and a kind's
    # own condition may hold it back (an observe-only resource that drifted).
    blocking = [c for c in outcome.conditions if c.blocks_ready and c.status]
    ready = isinstance(outcome, Done) and not blocking
    reason, message = outcome.reason, outcome.message
    if blocking:
        reason, message = blocking[0].reason, blocking[0].message
    if res.warnings:
        message = f"{message}; " + "; ".join(res.warnings)

    status: dict[str, Any] = {}
    if res.generation is not None:
        # observedGeneration moves only when that generation finished.
        if ready:
            status["observedGeneration"] = res.generation
        elif prev and "observedGeneration" in prev.status:
            status["observedGeneration"] = prev.status["observedGeneration"]
    status["specCommit"] = spec_commit
    conditions = [_condition("Ready", ready, reason, message, now, prev)]
    for cond in outcome.conditions:
        conditions.append(_condition(cond.type, cond.status, cond.reason, cond.message,
                                     now, prev))
    status["conditions"] = conditions
    if outcome.observed:
        status["observed"] = outcome.observed

    drift = dict((prev.status.get("drift") if prev is not None else None) or {})
    if isinstance(outcome, Done) and outcome.changes and in_effect_before:
        # The spec did not change, yet the device had to be put right: GitOps drift.
        drift = {"corrections": int(drift.get("corrections", 0)) + 1,
                 "lastCorrected": rfc3339(now),
                 "changes": list(outcome.changes[:MAX_DRIFT_CHANGES])}
        log.warning("%s drifted from its spec and was corrected: %s", res.key,
                    "; ".join(outcome.changes))
    if drift:
        status["drift"] = drift

    if isinstance(outcome, Retry) and outcome.reason in HELD:
        # Waiting for a window: no backoff; the pass after it opens applies the change.
        if outcome.after > 0:
            ctx.request_wakeup(now + outcome.after)
            _note_retry(out, outcome.after)
    elif isinstance(outcome, Retry) and outcome.reason not in NO_BACKOFF:
        attempts = (backoff.attempts if backoff is not None else 0) + 1
        base = max(outcome.after, MIN_RETRY_S)
        delay = max(base, min(base * 2 ** min(attempts - 1, 20), MAX_BACKOFF_S))
        status["retryAfterSeconds"] = delay
        rec_backoff = Backoff(attempts, now + delay)
        ctx.request_wakeup(now + delay)
        _note_retry(out, delay)
    if ready and fp is not None:
        rec_fingerprint = fp
    if isinstance(outcome, Retry) and outcome.reason in HELD and prev \
            and prev.spec is not None:
        # The previous spec is still what the device runs: keep it on record, so that
        # drift is judged and a removal undone against what is really in effect.
        rec_spec, rec_document = prev.spec, prev.document
        if prev.fingerprint:
            rec_fingerprint = prev.fingerprint
    if outcome.memory is not None:
        memory = outcome.memory
    return ResourceRecord(res.kind, res.name, res.path, status, spec=rec_spec,
                          document=rec_document, fingerprint=rec_fingerprint,
                          memory=memory, backoff=rec_backoff)


def _note_retry(out: PassResult, after: float) -> None:
    out.retry_after = after if out.retry_after is None else min(out.retry_after, after)


class Checked(NamedTuple):
    """A resource that may be acted on: its kind, common fields and validated spec."""

    kind: Kind
    common: Common
    spec: dict[str, Any]


def check(res: Resource, kinds: Mapping[str, Kind], order: Order) -> Checked | Failed:
    """Kind, schema and order: the one evaluation ``reconcile`` and ``plan`` both use.

    Any exception from a kind's ``validate`` (a plug-in's schema bug) fails this
    resource alone; so a plan can never disagree with what a pass does.
    """
    kind = kinds.get(res.kind)
    if kind is None:
        return Failed("UnknownKind", f"no kind {res.kind!r} on this agent "
                      f"(known: {', '.join(sorted(kinds))})")
    try:
        common = common_fields(res.spec)
        spec = kind.validate(dict(res.spec))
    except ResourceError as exc:
        return Failed(exc.reason, str(exc))
    except Exception as exc:  # a plug-in's schema bug fails this resource only
        return Failed("HandlerError", f"validate: {type(exc).__name__}: {exc}")
    if res.key in order.cycles:
        return Failed("DependencyCycle", f"dependsOn cycle: {order.cycles[res.key]}")
    if res.key in order.problems:
        return Failed(*order.problems[res.key])
    return Checked(kind, common, spec)


def _evaluate(res: Resource, kinds: Mapping[str, Kind], ctx: Context, order: Order,
              out: PassResult, gate: Gate, now: float
              ) -> tuple[Outcome, dict[str, Any] | None]:
    """Check, wait for dependencies and windows, then apply (or only observe)."""
    checked = check(res, kinds, order)
    if isinstance(checked, Failed):
        return checked, None
    kind, common, spec = checked.kind, checked.common, checked.spec
    waiting = [d for d in order.deps.get(res.key, [])
               if d not in out.records or not out.records[d].ready]
    if waiting:
        return Retry("DependencyNotReady", f"waiting for {', '.join(waiting)} to be Ready",
                     0), spec
    held = held_by_window(res.kind, res.key, kind, common, spec, ctx, gate, now)
    if held is not None:
        keep_in_effect(res.key, kind, ctx)
        return held, spec
    try:
        if common.observe_only and kind.ACTS:
            return _observe(res, kind, spec, ctx), spec
        return kind.apply(res.key, spec, ctx), spec
    except Exception as exc:  # a handler bug must not stop the other resources
        log.exception("%s: handler error", res.key)
        return Retry("HandlerError", f"{type(exc).__name__}: {exc}", 60), spec


def _observe(res: Resource, kind: Kind, spec: dict[str, Any], ctx: Context) -> Outcome:
    """``reconcile: observe-only``: compare and report, never act."""
    difference = kind.plan(res.key, spec, ctx)
    if difference is None:
        return Done("InSync", "the device matches the spec (observe-only: the agent does "
                    "not act on it)", conditions=(
                        Condition("Drifted", False, "NoDrift", "the device matches the spec"),))
    return Done("Observed", "observe-only", conditions=(
        Condition("Drifted", True, "DriftDetected",
                  f"{difference} (observe-only: the agent reports it and does not act)",
                  blocks_ready=True),))


def leaving(previous: dict[str, ResourceRecord], keys: set[str], invalid_paths: set[str]
            ) -> list[tuple[str, ResourceRecord]]:
    """Records of ``previous`` whose resource left the spec (``keys`` remain), in the
    order to undo them: dependents before what they depend on.

    A file that is still there but now invalid keeps its last good spec applied, so
    the resource it held is not leaving; a file that now holds another valid resource
    is a rename, and the old resource goes.
    """
    gone = {key: prev for key, prev in previous.items()
            if key not in keys and prev.path not in invalid_paths and prev.spec is not None}
    order = resolve_order((k, k.split("/", 1)[-1], declared_dependencies(p.spec or {}))
                          for k, p in gone.items())
    return [(key, gone[key]) for key in reversed(order.keys)]


class Leaving(NamedTuple):
    """A resource that left the spec, and what undoing it means (``reconcile``, ``plan``)."""

    key: str
    previous: ResourceRecord
    kept: str | None  # why its effect stays ("prune: false", "observe-only"), or None
    kind: Kind | None  # None: no such kind on this agent, nothing to undo
    spec: dict[str, Any] | None  # the validated spec to undo; None: nothing valid
    problem: str = ""  # why there is nothing valid to undo
    window: str | None = None  # the maintenance window its removal waits for


def leaving_resources(previous: dict[str, ResourceRecord], keys: set[str],
                      invalid_paths: set[str], kinds: Mapping[str, Kind]) -> list[Leaving]:
    """``leaving``, each with the decision a pass takes: keep it, or undo which spec."""
    out: list[Leaving] = []
    for key, prev in leaving(previous, keys, invalid_paths):
        spec_before = prev.spec or {}
        try:
            common = common_fields(spec_before)
        except ResourceError:
            common = Common()
        kind = kinds.get(prev.kind or "")
        explicit = spec_before.get("prune")
        prune = common.prune if isinstance(explicit, bool) else \
            (kind.PRUNE_DEFAULT if kind is not None else True)
        if not prune or common.observe_only:
            # Kept on the device: asked for (prune: false), the kind's default, or never
            # ours to change.
            why = ("observe-only" if prune else "prune: false" if explicit is False
                   else "kept by default (prune: true removes it)")
            out.append(Leaving(key, prev, why, None, None))
            continue
        if kind is None:
            out.append(Leaving(key, prev, None, None, None, "no such kind here"))
            continue
        try:
            spec = kind.validate(dict(spec_before))
        except ResourceError as exc:
            out.append(Leaving(key, prev, None, kind, None, exc.reason))
            continue
        except Exception as exc:  # a plug-in's schema bug: nothing valid to undo
            out.append(Leaving(key, prev, None, kind, None,
                               f"HandlerError: validate: {type(exc).__name__}: {exc}"))
            continue
        out.append(Leaving(key, prev, None, kind, spec, window=common.window))
    return out


def _prune(previous: dict[str, ResourceRecord], out: PassResult, ctx: Context,
           kinds: Mapping[str, Kind], gate: Gate) -> None:
    invalid_paths = {r.path for r in out.records.values() if r.invalid and r.path}
    now = ctx.clock()
    for step in leaving_resources(previous, set(out.records), invalid_paths, kinds):
        if step.kept is not None:
            continue
        held = (gate.hold(step.window, now)
                if step.kind is not None and step.previous.kind not in EXEMPT_KINDS
                else None)
        if held is not None:
            # A removal is a change too: the resource stays as it was, reported, until
            # its window opens (the record keeps its spec, so a later pass prunes it).
            prev = step.previous
            reopens = gate.reopens(step.window, now)
            if reopens is not None:
                ctx.request_wakeup(reopens)
                _note_retry(out, reopens - now)
            out.records[step.key] = prev.with_status({**prev.status, "conditions": [
                _condition("Ready", False, held[0], f"removal {held[1]}", now, prev)]})
            continue
        if step.kind is not None and step.spec is not None:
            try:
                step.kind.prune(step.key, step.spec, ctx)
            except (ResourceError, FileNotFoundError):
                pass  # nothing left to undo is fine: the resource is gone either way
            except Exception as exc:  # a plug-in's prune bug fails this resource alone
                # A disk that refused (full, failing, read-only) is no bug: one line.
                if isinstance(exc, OSError):
                    log.warning("%s: prune failed: %s", step.key, exc)
                else:
                    log.exception("%s: prune failed", step.key)
                prev = step.previous
                message = (f"prune failed: {type(exc).__name__}: {exc}; "
                           "tried again at the next pass")
                # Kept as an invalid record with its spec, so the next pass retries the
                # prune and the summary reports it until it succeeds.
                out.records[step.key] = ResourceRecord(
                    prev.kind, prev.name, prev.path, spec=prev.spec, invalid=True,
                    status={"conditions": [_condition(
                        "Ready", False, "PruneFailed", message, now, prev)]})
                continue
        out.pruned.append(step.key)
