"""The gate of a staged rollout, evaluated from the devices' signed status commits.

For each enrolled device: its wave (``giter_agent.spec.rollouts``, the rule the device
applies), the governed files that reach it (the device's own targeting, every wave
open), and what its newest status commit on ``status/<id>`` says about them. Only
status commits that verify against the device's enrolled key count (``import`` put
them there; they are verified again here), and only those that observed a spec in
which the device's wave was open. A device is then:

- ``held``: its wave is not open, it keeps the baseline version;
- ``pending``: its wave is open but it has not reported the new generation yet;
- ``ready``: every governed resource Ready with ``observedGeneration`` the new one;
- ``failed``: a governed resource not Ready (or refused) on a spec that opened its wave.

The next wave may open when the rollout is neither paused, aborted nor complete, no
device of an open wave failed, and at least ``readyPercent`` of them are ready; the
ready devices' status commits are the evidence ``advance`` records. With ``timeLimit``,
open waves that have not passed the gate that long after the signed commit that opened
the newest of them (its committer date) stop the rollout as timed out. Called by
``giter-bundle rollout``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from giter_agent.core.errors import GiterError
from giter_agent.core.times import span
from giter_agent.spec.rollouts import Rollout
from giter_bundle.errors import PublisherError

HELD, PENDING, READY, FAILED, UNAFFECTED = "held", "pending", "ready", "failed", "unaffected"


@dataclass(frozen=True)
class DeviceGate:
    """One device's part in the gate."""

    device: str
    wave: str | None
    state: str
    status_commit: str | None = None
    detail: str = ""


@dataclass
class Gate:
    """The rollout, each device's state, and whether the next wave may open."""

    rollout: Rollout
    spec_commit: str
    devices: list[DeviceGate] = field(default_factory=list)
    open: bool = False
    why: str = ""
    opened_at: int | None = None  # commit date of the commit that opened the newest wave
    timed_out: bool = False

    @property
    def evidence(self) -> list[DeviceGate]:
        return [d for d in self.devices if d.state == READY]

    @property
    def failed(self) -> list[DeviceGate]:
        return [d for d in self.devices if d.state == FAILED]


def read_rollout(exchange: Any, name: str) -> tuple[bytes, Rollout]:
    """(tip, the rollout ``name`` at the tip of the spec branch)."""
    from giter_agent.core.layout import ROLLOUT_FOLDER
    from giter_agent.history.tree import read_file
    from giter_agent.spec.rollouts import parse_rollout

    tip = exchange.require_tip()
    path = f"{ROLLOUT_FOLDER}/{name}.yaml"
    data = read_file(exchange.history.object_store, exchange.commit(tip).tree, path)
    if data is None:
        raise PublisherError(f"no rollout {name} on {exchange.branch} ({path})",
                             reason="UnknownRollout")
    return tip, parse_rollout(path, data)


def _status_of(store: Any, tree: bytes, path: str) -> dict[str, Any] | None:
    from giter_agent.history.tree import read_file
    from giter_agent.spec.resources import load_yaml

    try:
        data = read_file(store, tree, path)
        doc = load_yaml(data) if data is not None else None
    except GiterError:
        return None
    status = doc.get("status") if isinstance(doc, dict) else None
    return status if isinstance(status, dict) else None


def _device_state(store: Any, rollout: Rollout, device_id: str, wave: int,
                  status_commit: bytes, governed: dict[str, int | None]) -> tuple[str, str]:
    """(state, detail) of a device in an open wave, from its newest status commit."""
    from giter_agent.core.layout import summary_path
    from giter_agent.history.objects import read_commit
    from giter_agent.history.tree import read_file
    from giter_agent.spec.rollouts import parse_rollout

    commit = read_commit(store, status_commit)
    try:
        data = read_file(store, commit.tree, rollout.path)
        seen = parse_rollout(rollout.path, data) if data is not None else None
    except GiterError:
        seen = None
    if (seen is None or seen.baseline != rollout.baseline or seen.aborted
            or seen.open_waves <= wave):
        return PENDING, "has not reported on a spec that opened its wave"
    summary = _status_of(store, commit.tree, summary_path(device_id))
    for bad in (summary or {}).get("invalid") or []:
        if isinstance(bad, dict) and bad.get("path") in governed:
            return FAILED, f"{bad.get('path')}: {bad.get('reason')}: {bad.get('message')}"
    waiting = []
    for path, generation in sorted(governed.items()):
        status = _status_of(store, commit.tree, path) or {}
        ready = next((c for c in status.get("conditions") or []
                      if isinstance(c, dict) and c.get("type") == "Ready"), None)
        if ready is not None and ready.get("status") == "False":
            return FAILED, f"{path}: {ready.get('reason')}: {ready.get('message')}"
        if ready is None or ready.get("status") != "True" \
                or status.get("observedGeneration") != generation:
            waiting.append(path)
    if waiting:
        return PENDING, f"not yet Ready on the new generation: {', '.join(waiting)}"
    return READY, "Ready on the new generation"


def evaluate(exchange: Any, name: str, *, now: float | None = None) -> Gate:
    """The gate of rollout ``name`` at the spec branch's tip, judged at ``now``."""
    from giter_agent.core.errors import TrustError
    from giter_agent.spec.targeting import target
    from giter_agent.trust.status_rule import verify_status_commit
    from giter_bundle.enrolment import read_devices

    tip, rollout = read_rollout(exchange, name)
    store = exchange.history.object_store
    tree = exchange.commit(tip).tree
    gate = Gate(rollout, tip.decode())
    devices, _problems = read_devices(store, tree)
    tips = exchange.status_tips()
    parsed: dict[Any, Any] = {}  # each file parsed once, not once per device
    for device in sorted(devices.values(), key=lambda d: d.id):
        index = rollout.wave_of(device.id, device.label_map)
        wave = rollout.waves[index].name if index is not None else None
        try:
            chosen = target(store, tree, device.id, device.groups, hold=False,
                            parsed=parsed).specset
        except GiterError as exc:
            gate.devices.append(DeviceGate(device.id, wave, FAILED, detail=str(exc)))
            continue
        governed = {r.path: r.generation for r in chosen.resources
                    if r.path in rollout.resources}
        governed.update({b.path: None for b in chosen.invalid if b.path in rollout.resources})
        if not governed:
            gate.devices.append(DeviceGate(device.id, wave, UNAFFECTED))
            continue
        if index is None or index >= rollout.open_waves or rollout.aborted:
            gate.devices.append(DeviceGate(device.id, wave, HELD,
                                           detail="keeps the baseline version"))
            continue
        status_tip = tips.get(device.id)
        if status_tip is None:
            gate.devices.append(DeviceGate(device.id, wave, PENDING,
                                           detail="no status imported yet"))
            continue
        try:
            verify_status_commit(store, status_tip, device.id, device.key,
                                 device_groups=device.groups)
        except TrustError as exc:
            gate.devices.append(DeviceGate(device.id, wave, PENDING, status_tip.decode(),
                                           f"status commit does not verify: {exc}"))
            continue
        state, detail = _device_state(store, rollout, device.id, index, status_tip,
                                      governed)
        gate.devices.append(DeviceGate(device.id, wave, state, status_tip.decode(), detail))
    if rollout.time_limit is not None and rollout.open_waves:
        gate.opened_at = _opened_at(exchange, tip, rollout)
    _decide(gate, now=time.time() if now is None else now)
    return gate


MAX_OPENING_WALK = 10_000  # spec commits walked back to find when the wave opened


def _opened_at(exchange: Any, tip: bytes, rollout: Rollout) -> int:
    """The committer date of the oldest commit, back along first parents from ``tip``,
    whose rollout document already had today's ``openWaves`` and baseline: when the
    newest open wave opened (signed, so nobody but a publisher can move it)."""
    from giter_agent.history.tree import read_file
    from giter_agent.spec.rollouts import parse_rollout

    store = exchange.history.object_store
    commit = exchange.commit(tip)
    opened = int(commit.commit_time)
    for _ in range(MAX_OPENING_WALK):
        if not commit.parents:
            break
        parent = exchange.commit(commit.parents[0])
        try:
            data = read_file(store, parent.tree, rollout.path)
            before = parse_rollout(rollout.path, data) if data is not None else None
        except GiterError:
            before = None
        if (before is None or before.open_waves != rollout.open_waves
                or before.baseline != rollout.baseline):
            break
        commit, opened = parent, int(parent.commit_time)
    return opened


def _decide(gate: Gate, *, now: float) -> None:
    rollout = gate.rollout
    opened = [d for d in gate.devices if d.state in (PENDING, READY, FAILED)]
    ready = len(gate.evidence)
    short = bool(opened) and ready * 100 < rollout.ready_percent * len(opened)
    limit = rollout.time_limit
    if rollout.aborted:
        gate.why = "aborted: every device is back on the baseline version"
    elif rollout.open_waves == len(rollout.waves):
        gate.why = "complete: every wave is open"
    elif gate.failed:
        gate.why = (f"stopped: {', '.join(d.device for d in gate.failed)} failed on the new "
                    "generation (abort, or fix and let them report again)")
    elif (short and limit is not None and gate.opened_at is not None
          and now - gate.opened_at > limit):
        gate.timed_out = True
        gate.why = (f"stopped: timed out: {ready}/{len(opened)} devices of the open waves "
                    f"Ready on the new generation {span(now - gate.opened_at)} after the "
                    f"wave opened (timeLimit {span(limit)}, need "
                    f"{rollout.ready_percent}%); abort, or raise timeLimit to wait longer")
    elif short:
        gate.why = (f"waiting: {ready}/{len(opened)} devices of the open waves Ready on the "
                    f"new generation, need {rollout.ready_percent}%")
    elif rollout.paused:
        gate.why = "paused (giter-bundle rollout resume)"
    else:
        gate.open = True
        gate.why = (f"open: {ready}/{len(opened)} devices of the open waves Ready on the new "
                    f"generation, none failed; next: wave "
                    f"{rollout.waves[rollout.open_waves].name}")
