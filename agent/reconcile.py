"""One level-based reconcile pass over the resources of the applied spec.

The pass is told *which* resources exist, never *what happened*: for each one it
validates the spec against its kind's schema, applies it, and always produces a
status (also on failure), as controller-runtime does. Resources that were applied
before and are gone from the spec are pruned unless their spec said ``prune: false``.
A bad resource fails alone; the rest still apply.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent.errors import ResourceError
from agent.kinds.base import Context, Done, Failed, Kind, Outcome, Retry
from agent.resources import Resource, SpecSet


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PassResult:
    """Status records by resource key, plus what the pass pruned."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    pruned: list[str] = field(default_factory=list)
    retry_after: float | None = None

    @property
    def not_ready(self) -> list[str]:
        return [k for k, r in self.records.items() if not _ready(r)]


def _ready(record: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in record["status"].get("conditions", []))


def _condition(ready: bool, reason: str, message: str, now: float,
               previous: dict[str, Any] | None) -> dict[str, Any]:
    status = "True" if ready else "False"
    since = rfc3339(now)
    for cond in (previous or {}).get("status", {}).get("conditions", []):
        # lastTransitionTime moves only when the condition's status flips.
        if cond.get("type") == "Ready" and cond.get("status") == status:
            since = cond.get("lastTransitionTime", since)
    return {"type": "Ready", "status": status, "reason": reason, "message": message,
            "lastTransitionTime": since}


def reconcile(specset: SpecSet, ctx: Context, kinds: dict[str, Kind],
              previous: dict[str, dict[str, Any]], spec_commit: str,
              clock: Callable[[], float] | None = None) -> PassResult:
    """Apply every resource of ``specset``; prune what ``previous`` had and it lacks."""
    now = (clock or ctx.clock)()
    out = PassResult()
    ctx.clear_wakeups()  # each pass asks afresh for what it needs next

    for res in specset.resources:
        prev = previous.get(res.key)
        outcome = _apply_one(res, ctx, kinds)
        status: dict[str, Any] = {}
        gen_done = isinstance(outcome, Done)
        if res.generation is not None:
            # observedGeneration moves only when that generation finished.
            if gen_done:
                status["observedGeneration"] = res.generation
            elif prev and "observedGeneration" in prev["status"]:
                status["observedGeneration"] = prev["status"]["observedGeneration"]
        status["specCommit"] = spec_commit
        message = outcome.message
        if res.warnings:
            message = f"{message}; " + "; ".join(res.warnings)
        status["conditions"] = [_condition(gen_done, outcome.reason, message, now, prev)]
        if outcome.observed:
            status["observed"] = outcome.observed
        if isinstance(outcome, Retry):
            status["retryAfterSeconds"] = outcome.after
            out.retry_after = min(out.retry_after or outcome.after, outcome.after)
            ctx.request_wakeup(now + outcome.after)
        out.records[res.key] = {"kind": res.kind, "name": res.name, "path": res.path,
                                "spec": res.spec, "document": res.document, "status": status}

    for bad in specset.invalid:
        prev = previous.get(bad.key) or _previous_at(previous, bad.path)
        keep = prev is not None and not prev.get("invalid") and "spec" in prev
        message = bad.message + ("; the last valid spec stays applied" if keep else "")
        status = {"specCommit": spec_commit,
                  "conditions": [_condition(False, bad.reason, message, now, prev)]}
        record = {"kind": bad.kind, "name": bad.name, "path": bad.path, "status": status,
                  "invalid": True}
        if keep:
            # Remember the last good spec so that a later removal still prunes it.
            record["spec"] = prev["spec"]
            record["document"] = prev.get("document")
        out.records[bad.key] = record

    kept_paths = {r["path"] for r in out.records.values()}
    for key, prev in previous.items():
        if key in out.records or prev.get("path") in kept_paths or "spec" not in prev:
            continue
        if prev["spec"].get("prune", True) is False:
            continue
        kind = kinds.get(prev["kind"])
        if kind is not None:
            # Nothing valid to undo is fine: the resource is gone from the spec either way.
            with contextlib.suppress(ResourceError, OSError):
                kind.prune(key, kind.validate(dict(prev["spec"])), ctx)
        out.pruned.append(key)
    return out


def _previous_at(previous: dict[str, dict[str, Any]], path: str) -> dict[str, Any] | None:
    for rec in previous.values():
        if rec.get("path") == path:
            return rec
    return None


def _apply_one(res: Resource, ctx: Context, kinds: dict[str, Kind]) -> Outcome:
    kind = kinds.get(res.kind)
    if kind is None:
        return Failed("UnknownKind", f"no kind {res.kind!r} on this agent "
                      f"(known: {', '.join(sorted(kinds))})")
    try:
        spec = kind.validate(dict(res.spec))
    except ResourceError as exc:
        return Failed(exc.reason, str(exc))
    try:
        return kind.apply(res.key, spec, ctx)
    except Exception as exc:  # a handler bug must not stop the other resources
        return Retry("HandlerError", f"{type(exc).__name__}: {exc}", 60)

