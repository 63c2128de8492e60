"""The agent's state as Prometheus metrics, in a node_exporter textfile-collector file.

``[metrics] textfile = "/var/lib/prometheus/node-exporter/giter.prom"`` turns it on; the
agent writes the file at the end of every pass (sync, network, reconcile), atomically
(temp file, rename: node_exporter never reads half a file) and only when its content
changed, so an idle board does not wear its SD card. Nothing in it changes by itself
with time: ages are timestamps (``time() - giter_last_sync_timestamp_seconds`` in
PromQL), never "seconds ago".

Metrics (all gauges; ``device`` is the device id on each):

- ``giter_up`` 1: the file was written by an agent that could read its state;
- ``giter_state{state=...}``: 1 for the one-word state of ``state.health``, 0 for the rest;
- ``giter_last_sync_timestamp_seconds``: when the last sync ended (absent before any);
- ``giter_last_sync_outcome{outcome=...}``: 1 for the last sync's outcome (applied,
  up-to-date, refused, unusable, no-bundles, invalid-spec, offline, error), 0 for the rest;
- ``giter_last_sync_refused_bundles``: bundles the last sync refused or could not use;
- ``giter_resources{ready="true"|"false"}``: resources Ready and not Ready;
- ``giter_spec_commit_timestamp_seconds``: the applied spec's commit time (its age is
  ``time() -`` this; absent before any spec);
- ``giter_spec_expires_timestamp_seconds``: its ``Expires:`` trailer, when it has one;
- ``giter_network_online``: 1 online, 0 offline (absent without ``[network]``);
- ``giter_network_failures``: failed tries at the hub in a row.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from giter_agent.core.durable import atomic_write

OUTCOMES = ("applied", "up-to-date", "refused", "unusable", "no-bundles", "invalid-spec",
            "offline", "error")


def _labels(device: str, **extra: str) -> str:
    items = {"device": device, **extra}
    escaped = (f'{k}="{_escape(v)}"' for k, v in items.items())
    return "{" + ",".join(escaped) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _timestamp(rfc3339: Any) -> float | None:
    if not isinstance(rfc3339, str) or not rfc3339:
        return None
    try:
        return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render(device: str, state: Any, *, spec_time: float | None = None) -> str:
    """The textfile for ``state`` (a ``State``); ``spec_time``: the applied commit's time."""
    from giter_agent.state.health import STATES, health

    out: list[str] = []

    def metric(name: str, kind: str, help_text: str,
               samples: Iterable[tuple[dict[str, str], float]]) -> None:
        rows = list(samples)
        if not rows:
            return
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(f"{name}{_labels(device, **labels)} {_number(value)}"
                   for labels, value in rows)

    word = health(state).state
    metric("giter_up", "gauge", "1: written by a giter-agent that could read its state.",
           [({}, 1)])
    metric("giter_state", "gauge", "The agent's one-word state (1 for the current one).",
           [({"state": s}, 1 if s == word else 0) for s in STATES])
    last = state.last_sync or {}
    when = _timestamp(last.get("time"))
    metric("giter_last_sync_timestamp_seconds", "gauge",
           "When the last sync ended, Unix time.", [({}, when)] if when is not None else [])
    if last:
        outcome = str(last.get("outcome", ""))
        metric("giter_last_sync_outcome", "gauge",
               "The last sync's outcome (1 for the one it had).",
               [({"outcome": o}, 1 if o == outcome else 0) for o in OUTCOMES])
        refused = [b for b in last.get("bundles", [])
                   if isinstance(b, dict) and b.get("verdict") in ("refused", "unusable")]
        metric("giter_last_sync_refused_bundles", "gauge",
               "Bundles the last sync refused or could not use.", [({}, len(refused))])
    ready = sum(1 for rec in state.resources.values() if rec.ready)
    metric("giter_resources", "gauge", "Resources by readiness.",
           [({"ready": "true"}, ready), ({"ready": "false"}, len(state.resources) - ready)])
    metric("giter_spec_commit_timestamp_seconds", "gauge",
           "The applied spec commit's time, Unix time (its age: time() - this).",
           [({}, spec_time)] if spec_time is not None else [])
    expires = _timestamp(state.expires)
    metric("giter_spec_expires_timestamp_seconds", "gauge",
           "The applied spec's Expires: trailer, Unix time.",
           [({}, expires)] if expires is not None else [])
    net = state.network
    if net is not None:
        metric("giter_network_online", "gauge", "1 when the hub was reachable last time.",
               [({}, 1 if net.state == "online" else 0)])
        metric("giter_network_failures", "gauge", "Failed tries at the hub in a row.",
               [({}, net.failures)])
    return "\n".join(out) + "\n"




def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` (mode 0644: node_exporter runs as another user) unless
    it already holds exactly that; True when it wrote."""
    data = text.encode("utf-8")
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    atomic_write(path, data, mode=0o644)
    return True
