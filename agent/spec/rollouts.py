"""Staged rollouts: which wave a device is in, and whether its wave is open.

A ``Rollout`` document (``rollouts/<name>.yaml``) governs some resource files. Until a
device's wave is open, the device applies those files as they were in the rollout's
``baseline`` commit (an ancestor it already holds), not as they are now::

    apiVersion: giter.dev/v1alpha1
    kind: Rollout
    metadata: {name: motd-v2}
    spec:
      baseline: "3f2c..."            # the spec commit whose versions are the previous ones
      resources: [fleet/motd.yaml]   # the governed files
      waves:
        - {name: canary, selector: {matchLabels: {ring: canary}}}
        - {name: half, percent: 50}
        - {name: all, percent: 100}
      readyPercent: 100              # the gate (giter-bundle rollout advance)
      openWaves: 1                   # waves 1..openWaves get the new version
      paused: false                  # advance refuses while paused
      aborted: false                 # every device back on the baseline version
      timeLimit: 2h                  # the open waves must pass the gate within this

A device is in the first wave whose ``selector`` (if any) matches its enrolled labels
and whose ``percent`` (if any) is above its bucket: a stable hash of the rollout name
and the device id, 0-99, so percentages are cumulative and a device never changes wave
while the rollout lasts. A device in no wave keeps the baseline version until the
rollout is removed. The device and ``giter-bundle rollout`` share this module.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from giter_agent.core.errors import ResourceError, TreeError
from giter_agent.core.layout import ROLLOUT_FOLDER
from giter_agent.core.named_tuple import NamedTuple
from giter_agent.core.yaml_policy import dump_yaml, load_yaml
from giter_agent.spec.selectors import Selector, parse_selector

KIND = "Rollout"
API_VERSION = "giter.dev/v1alpha1"
_SHA = re.compile(r"[0-9a-f]{40}")
_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?")
MAX_ROLLOUT_BYTES = 64 * 1024


class Wave(NamedTuple):
    name: str
    selector: Selector | None
    percent: int | None

    def takes(self, bucket: int, labels: Mapping[str, str]) -> bool:
        return ((self.selector is None or self.selector.matches(labels))
                and (self.percent is None or bucket < self.percent))


class Rollout(NamedTuple):
    """One parsed ``Rollout`` document."""

    name: str
    path: str
    baseline: str
    resources: tuple[str, ...]
    waves: tuple[Wave, ...]
    ready_percent: int
    open_waves: int
    paused: bool
    aborted: bool
    document: dict[str, Any]
    # Seconds the open waves have to pass the gate, counted from the signed commit that
    # opened the newest of them (``giter-bundle rollout``); None: no limit.
    time_limit: int | None = None

    def wave_of(self, device_id: str, labels: Mapping[str, str]) -> int | None:
        """The device's wave (0-based), or None if no wave takes it."""
        b = bucket(self.name, device_id)
        return next((i for i, w in enumerate(self.waves) if w.takes(b, labels)), None)

    def holds(self, device_id: str, labels: Mapping[str, str]) -> str | None:
        """Why the device keeps the baseline versions (None: it gets the new ones)."""
        if self.aborted:
            return f"rollout {self.name} aborted"
        wave = self.wave_of(device_id, labels)
        if wave is None:
            return f"rollout {self.name}: in no wave"
        if wave >= self.open_waves:
            return f"rollout {self.name}: wave {self.waves[wave].name} not open"
        return None

    def with_spec(self, **changes: Any) -> bytes:
        """This document with ``spec`` fields changed (``giter-bundle rollout``)."""
        doc = {**self.document, "spec": {**self.document["spec"], **changes}}
        return dump_yaml(doc)


def bucket(rollout: str, device_id: str) -> int:
    """0-99, fixed by the rollout's name and the device id (sha256), never by order."""
    digest = hashlib.sha256(f"{rollout}\0{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def parse_rollout(path: str, data: bytes) -> Rollout:
    """A ``Rollout`` document, or ``ResourceError(InvalidRollout)``."""
    def bad(message: str) -> ResourceError:
        return ResourceError(f"{path}: {message}", reason="InvalidRollout")

    doc = load_yaml(data)
    if (not isinstance(doc, dict) or doc.get("apiVersion") != API_VERSION
            or doc.get("kind") != KIND or not isinstance(doc.get("metadata"), dict)
            or not isinstance(doc.get("spec"), dict) or set(doc) - {"apiVersion", "kind",
                                                                   "metadata", "spec"}):
        raise bad(f"must be one {KIND} document (apiVersion {API_VERSION}, metadata, spec)")
    name = doc["metadata"].get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name) \
            or path != f"{ROLLOUT_FOLDER}/{name}.yaml":
        raise bad(f"metadata.name must be the file's name ({ROLLOUT_FOLDER}/<name>.yaml)")
    spec = doc["spec"]
    known = {"baseline", "resources", "waves", "readyPercent", "openWaves", "paused",
             "aborted", "timeLimit"}
    if set(spec) - known:
        raise bad(f"unknown spec field(s) {', '.join(sorted(map(str, set(spec) - known)))}")
    baseline = spec.get("baseline")
    if not isinstance(baseline, str) or not _SHA.fullmatch(baseline):
        raise bad("spec.baseline must be a full commit id, quoted (git rev-parse main, "
                  "before the change)")
    resources = spec.get("resources")
    if (not isinstance(resources, list) or not resources
            or not all(isinstance(r, str) and r.endswith((".yaml", ".yml")) for r in resources)):
        raise bad("spec.resources must list the governed resource files")
    raw_waves = spec.get("waves")
    if not isinstance(raw_waves, list) or not raw_waves:
        raise bad("spec.waves must be a non-empty list")
    waves = []
    for i, raw in enumerate(raw_waves):
        if not isinstance(raw, dict) or set(raw) - {"name", "selector", "percent"} \
                or not isinstance(raw.get("name"), str):
            raise bad(f"spec.waves[{i}] must have a name, and a selector and/or percent")
        percent = raw.get("percent")
        if percent is not None and (type(percent) is not int or not 1 <= percent <= 100):
            raise bad(f"spec.waves[{i}].percent must be an integer 1-100")
        selector = (parse_selector(raw["selector"], f"spec.waves[{i}]")
                    if "selector" in raw else None)
        if selector is None and percent is None:
            raise bad(f"spec.waves[{i}] needs a selector and/or a percent")
        waves.append(Wave(raw["name"], selector, percent))
    ints = {}
    for field, default, low, high in (("readyPercent", 100, 0, 100),
                                      ("openWaves", 0, 0, len(waves))):
        value = spec.get(field, default)
        if type(value) is not int or not low <= value <= high:
            raise bad(f"spec.{field} must be an integer {low}-{high}")
        ints[field] = value
    flags = {}
    for field in ("paused", "aborted"):
        value = spec.get(field, False)
        if not isinstance(value, bool):
            raise bad(f"spec.{field} must be true or false")
        flags[field] = value
    time_limit = None
    if "timeLimit" in spec:
        from giter_agent.core.errors import UsageError
        from giter_agent.core.times import parse_duration

        raw = spec["timeLimit"]
        try:
            time_limit = parse_duration(raw) if isinstance(raw, str) else None
        except UsageError:
            time_limit = None
        if not time_limit:
            raise bad("spec.timeLimit must be a duration such as 2h, 30m or 1d, quoted")
    return Rollout(name, path, baseline, tuple(resources), tuple(waves),
                   ints["readyPercent"], ints["openWaves"], flags["paused"],
                   flags["aborted"], doc, time_limit)


def read_rollouts(store: Any, tree: bytes) -> list[Rollout]:
    """Every rollout in ``tree``; a broken one is a ``TreeError``: governed changes must
    not reach a device because the document that holds them back did not parse."""
    from giter_agent.history.tree import iter_files

    out: list[Rollout] = []
    governed: dict[str, str] = {}
    for path, data in iter_files(store, tree, ROLLOUT_FOLDER, max_blob=MAX_ROLLOUT_BYTES):
        try:
            rollout = parse_rollout(path, data)
        except ResourceError as exc:
            raise TreeError(str(exc), reason="InvalidRollout") from None
        for res in rollout.resources:
            if res in governed:
                raise TreeError(f"{path}: {res} is also governed by {governed[res]}",
                                reason="InvalidRollout")
            governed[res] = path
        out.append(rollout)
    return out
