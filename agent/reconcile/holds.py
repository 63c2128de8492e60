"""Maintenance-window holds: a change that must wait for its window, and what a pass
does meanwhile.

Only changes wait (``spec.windows``, ``window:`` on a resource, the Agent's
``defaultWindow``): a spec the last pass left in effect is kept right at any time, so
drift is still corrected, and observing never waits. ``reconcile.engine`` and
``reconcile.plan`` ask the same question here.
"""

from __future__ import annotations

from typing import Any

from giter_agent.core.log import get_logger
from giter_agent.kinds.base import Common, Context, Done, Kind, Retry, applied_before, fingerprint
from giter_agent.spec.windows import EXEMPT_KINDS, Gate

log = get_logger("giter.reconcile")

# The reasons of a change held back by its maintenance window: no backoff, no error.
HELD = ("OutsideWindow", "WindowUnknown", "UnknownWindow")


def held_by_window(res_kind: str, key: str, kind: Kind, common: Common,
                   spec: dict[str, Any], ctx: Context, gate: Gate, now: float) -> Retry | None:
    """A change that must wait for its maintenance window, as the outcome to report.

    Only changes wait: a spec the last pass left in effect is kept right (drift is
    corrected) at any time, and observing never waits."""
    if res_kind in EXEMPT_KINDS or not kind.ACTS or common.observe_only:
        return None
    if applied_before(key, spec, ctx):
        return None
    held = gate.hold(common.window, now)
    if held is None:
        return None
    reopens = gate.reopens(common.window, now)
    return Retry(held[0], held[1], max(0.0, reopens - now) if reopens is not None else 0)


def keep_in_effect(key: str, kind: Kind, ctx: Context) -> None:
    """While a change waits for its window, keep the spec in effect right (drift is
    corrected at any time): apply the previous spec again, as any pass would."""
    prev = ctx.records.get(key)
    if prev is None or not prev.fingerprint or prev.spec is None:
        return
    try:
        old = kind.validate(dict(prev.spec))
        if fingerprint(old) == prev.fingerprint:
            outcome = kind.apply(key, old, ctx)
            if isinstance(outcome, Done) and outcome.changes:
                log.warning("%s drifted from the spec in effect and was corrected: %s", key,
                            "; ".join(outcome.changes))
    except Exception as exc:  # a held change must not fail the pass
        log.warning("%s: keeping the spec in effect failed: %s", key, exc)
