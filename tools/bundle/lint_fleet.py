"""Lint's checks of fleet targeting: what each enrolled device would make of the tree.

``fleet/`` selectors checked once; for every enrolled device, what its own targeting
(``giter_agent.spec.targeting``) would refuse (two definitions at one level, a
placeholder with no value, a window no Agent or ``spec.windows`` defines) and each spec
with placeholders as rendered for it, against its kind's schema; the ``rollouts/``
files as devices parse them; the ``values/`` files as devices parse them. Called by
``giter_bundle.lint.lint_tree``.
"""

from __future__ import annotations

from typing import Any

from giter_agent.core.errors import GiterError, TreeError
from giter_agent.spec.placeholders import uses_placeholders
from giter_bundle.lint import RESOURCE_SUFFIXES, Finding, spec_errors


def selector_findings(path: str, data: bytes) -> list[Finding]:
    """A ``fleet/`` resource's selector, checked once (every device would refuse it)."""
    from giter_agent.spec.resources import parse_resource, selector_of

    if not path.endswith(RESOURCE_SUFFIXES):
        return []
    try:
        res = parse_resource(path, data)
    except GiterError:
        return []  # _check_resource reported it
    try:
        selector_of(res)
    except GiterError as exc:
        return [Finding(path, exc.reason, str(exc))]
    return []


def device_findings(store: Any, tree: bytes, devices: dict, kinds: dict) -> list[Finding]:
    """What each enrolled device would refuse, by the device's own targeting
    (``giter_agent.spec.targeting``): ambiguous definitions at one level, bad selectors,
    placeholders without a value; and each rendered spec against its kind's schema."""
    from giter_agent.spec.targeting import target

    findings: list[Finding] = []
    seen: set[tuple[str, str]] = set()
    parsed: dict[Any, Any] = {}  # each file parsed once, not once per device

    def add(path: str, reason: str, message: str) -> None:
        if (path, message) not in seen:
            seen.add((path, message))
            findings.append(Finding(path, reason, message))

    refused = ("DuplicateResource", "AmbiguousResource", "MissingValue",
               "AmbiguousValue", "InvalidPlaceholder", "InvalidValues")
    for device in devices.values():
        try:
            targeted = target(store, tree, device.id, device.groups, parsed=parsed)
        except GiterError:
            continue  # an unreadable folder or enrolment: reported above, per path
        for bad in targeted.specset.invalid:
            if bad.reason in refused:
                both = bad.reason in ("DuplicateResource", "AmbiguousResource")
                add(bad.path, bad.reason,
                    f"{bad.message} ({'both reach' if both else 'for'} {device.id})")
        for res in targeted.specset.resources:
            kind = kinds.get(res.kind)
            if kind is None or not uses_placeholders(res.document.get("spec")):
                continue
            for f in spec_errors(kind, dict(res.spec), res.path, b""):
                add(f.path, f.reason, f"{f.message} (as rendered for {device.id})")
        for path, message in _window_problems(targeted.specset, device.id):
            add(path, "UnknownWindow", message)
    return findings


def rollout_findings(store: Any, tree: bytes) -> list[Finding]:
    """Each ``rollouts/*.yaml`` as devices parse it (a broken one makes them refuse the
    whole commit), its governed files present, its baseline a commit of this history."""
    from giter_agent.core.layout import ROLLOUT_FOLDER
    from giter_agent.history.objects import read_commit
    from giter_agent.history.tree import iter_files, read_file
    from giter_agent.spec.rollouts import MAX_ROLLOUT_BYTES, parse_rollout, read_rollouts

    try:
        files = list(iter_files(store, tree, ROLLOUT_FOLDER, MAX_ROLLOUT_BYTES))
    except TreeError as exc:
        return [Finding(ROLLOUT_FOLDER, exc.reason, str(exc))]
    findings: list[Finding] = []
    for path, data in files:
        try:
            rollout = parse_rollout(path, data)
        except GiterError as exc:
            findings.append(Finding(path, exc.reason, str(exc).removeprefix(f"{path}: ")))
            continue
        try:
            base = read_commit(store, rollout.baseline.encode()).tree
        except (KeyError, GiterError):
            findings.append(Finding(path, "RolloutBaselineUnknown", f"baseline "
                                    f"{rollout.baseline[:12]} is not a commit of this "
                                    "repository: devices refuse the whole spec"))
            continue
        for governed in rollout.resources:
            if (read_file(store, tree, governed) is None
                    and read_file(store, base, governed) is None):
                findings.append(Finding(path, "NotInTheTree", f"{governed} is in neither "
                                        "the tree nor the baseline", error=False))
    if not any(f.error for f in findings):
        try:
            read_rollouts(store, tree)
        except GiterError as exc:
            findings.append(Finding(ROLLOUT_FOLDER, exc.reason, str(exc)))
    return findings


def values_findings(store: Any, tree: bytes, devices: dict) -> list[Finding]:
    """Every file under ``values/`` parses as devices parse it and is one a device reads."""
    from giter_agent.core.layout import (
        DEFAULT_VALUES,
        VALUES_FOLDER,
        device_values_path,
        label_values_path,
    )
    from giter_agent.history.tree import iter_files
    from giter_agent.spec.targeting import MAX_VALUES_BYTES, parse_values

    try:
        files = list(iter_files(store, tree, VALUES_FOLDER, MAX_VALUES_BYTES))
    except TreeError as exc:
        return [Finding(VALUES_FOLDER, exc.reason, f"{exc} (devices refuse every resource "
                        "that uses ${values.*} until it is fixed)")]
    read = {DEFAULT_VALUES} | {device_values_path(d) for d in devices}
    read |= {label_values_path(k, v) for d in devices.values() for k, v in d.labels}
    findings: list[Finding] = []
    for path, data in files:
        parts = path.split("/")
        shaped = (path == DEFAULT_VALUES
                  or (len(parts) == 3 and parts[1] == "devices" and path.endswith(".yaml"))
                  or (len(parts) == 4 and parts[1] == "labels" and path.endswith(".yaml")))
        if not shaped:
            findings.append(Finding(path, "UnexpectedFile", "no device reads it: values "
                                    "live in values/defaults.yaml, values/devices/<id>.yaml "
                                    "and values/labels/<key>/<value>.yaml", error=False))
            continue
        try:
            parse_values(data, path)
        except GiterError as exc:
            findings.append(Finding(path, exc.reason, str(exc).removeprefix(f"{path}: ")))
            continue
        if path not in read:
            findings.append(Finding(path, "NoMembers", "no enrolled device has this id or "
                                    "label", error=False))
    return findings


def _window_problems(specset: Any, device: str) -> list[tuple[str, str]]:
    """Resources whose maintenance window does not reach ``device``: their changes would
    wait for ever (the device holds them as ``UnknownWindow``)."""
    from giter_agent.spec.windows import EXEMPT_KINDS, gate_for

    gate = gate_for(specset, urgent=None, spec_time=None)
    out = []
    for res in specset.resources:
        name = res.spec.get("window") or gate.default
        if res.kind in EXEMPT_KINDS or not isinstance(name, str) or name in gate.schedules:
            continue
        out.append((res.path, f"window {name!r}: no valid MaintenanceWindow of that name "
                    f"reaches {device}, so its changes would wait for ever"))
    return out
