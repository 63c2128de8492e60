"""What one spec commit holds for one device: its resources, chosen and rendered.

The one path from a verified tree to a device's ``SpecSet``, for the agent (apply and
``giter-agent plan``) and for the publisher (``giter-bundle render`` and ``lint``), so
the two can never disagree:

1. the device's signed ``Device`` document (``.giter/devices/<id>.yaml``,
   ``spec.enrolment``) gives its labels - never its local config; a broken one makes the
   whole tree unusable for it (``TreeError(InvalidEnrolment)``: the last good spec stays);
2. ``devices/<id>/``, then ``fleet/`` (resources whose selector matches the labels),
   then ``groups/<g>/`` are read and ranked (``spec.resources.select``: device >
   selector > group);
3. a ``Rollout`` (``spec.rollouts``) whose wave for this device is not open swaps the
   files it governs for their versions in its baseline commit;
4. the values files give ``${values.*}`` (``values/devices/<id>.yaml`` over
   ``values/labels/<key>/<value>.yaml`` over ``values/defaults.yaml``), and every
   resource's ``spec`` is rendered (``spec.placeholders``); one that cannot be is
   refused alone (``MissingValue`` ...), keeping its last good spec applied.
"""

from __future__ import annotations

import re
from typing import Any

from giter_agent.core.errors import GiterError, ResourceError, TreeError
from giter_agent.core.layout import (
    DEFAULT_VALUES,
    FLEET_FOLDER,
    ROLLOUT_FOLDER,
    device_record_path,
    device_values_path,
    label_values_path,
    resource_prefixes,
)
from giter_agent.core.named_tuple import NamedTuple
from giter_agent.core.yaml_policy import load_yaml
from giter_agent.spec.enrolment import DeviceRecord, parse_device_record
from giter_agent.spec.placeholders import (
    VALUE_KEY_PATTERN,
    Scalar,
    Scope,
    render,
    uses_placeholders,
)
from giter_agent.spec.resources import Invalid, SpecSet, select

MAX_FILE_BYTES = 2 * 2**20  # per resource file, as the agent has always read them
MAX_VALUES_BYTES = 256 * 1024
MAX_RECORD_BYTES = 64 * 1024


class Targeted(NamedTuple):
    """A device's view of one spec tree."""

    record: DeviceRecord
    scope: Scope
    specset: SpecSet


def parse_values(data: bytes, path: str) -> dict[str, Scalar]:
    """A values file: one mapping of key to a string, number or boolean."""
    try:
        doc = load_yaml(data)
    except GiterError as exc:
        raise ResourceError(f"{path}: {exc}", reason="InvalidValues") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ResourceError(f"{path}: a values file is one mapping of key: value",
                            reason="InvalidValues")
    out: dict[str, Scalar] = {}
    for key, value in doc.items():
        if not isinstance(key, str) or not re.fullmatch(VALUE_KEY_PATTERN, key):
            raise ResourceError(f"{path}: key {key!r} must be letters, digits, '.', '_' or "
                                "'-' (max 63)", reason="InvalidValues")
        if not isinstance(value, str | int | float | bool):
            raise ResourceError(f"{path}: {key} must be a string, number or boolean (no "
                                "lists, mappings or null)", reason="InvalidValues")
        out[key] = value
    return out


def read_record(store: Any, tree: bytes, device_id: str) -> DeviceRecord:
    """The device's signed ``Device`` document (no labels when it has none)."""
    from giter_agent.history.tree import read_file

    path = device_record_path(device_id)
    data = read_file(store, tree, path, max_blob=MAX_RECORD_BYTES)
    if data is None:
        return DeviceRecord(device_id)
    try:
        return parse_device_record(device_id, data, path)
    except ResourceError as exc:
        raise TreeError(f"{exc}; this device's targeting cannot be read",
                        reason="InvalidEnrolment") from None


def scope_for(store: Any, tree: bytes, record: DeviceRecord) -> Scope:
    """The device's placeholder values, most specific winning."""
    from giter_agent.history.tree import read_file

    def load(path: str) -> dict[str, Scalar]:
        data = read_file(store, tree, path, max_blob=MAX_VALUES_BYTES)
        return {} if data is None else parse_values(data, path)

    try:
        values = load(DEFAULT_VALUES)
        by_label: dict[str, tuple[str, Scalar]] = {}
        ambiguous: dict[str, str] = {}
        for key, value in sorted(record.labels.items()):
            path = label_values_path(key, value)
            for name, val in load(path).items():
                seen = by_label.get(name)
                if seen is not None and seen[1] != val:
                    ambiguous[name] = (f"{seen[0]} and {path} set {name!r} differently; set "
                                       f"it in {device_values_path(record.device_id)}")
                by_label.setdefault(name, (path, val))
        values.update({name: val for name, (_, val) in by_label.items()})
        own = load(device_values_path(record.device_id))
        values.update(own)
        for name in own:
            ambiguous.pop(name, None)  # the device's own value settles it
    except (ResourceError, TreeError) as exc:
        return Scope(record.device_id, record.labels, values_problem=str(exc))
    return Scope(record.device_id, record.labels, values, ambiguous)


def _hold(store: Any, tree: bytes, files: list[tuple[str, bytes]], folders: list[str],
          record: DeviceRecord
          ) -> tuple[list[tuple[str, bytes]], dict[str, tuple[str, bytes | None]]]:
    """``files`` with each file a rollout holds for this device at its baseline version
    (left out if it did not exist there), and path -> (why, its current content) for
    those files."""
    from giter_agent.history.tree import list_files

    if list_files(store, tree, ROLLOUT_FOLDER) is None:
        return files, {}  # no rollout in this tree: nothing held, the parser not loaded

    from giter_agent.core.errors import HistoryError
    from giter_agent.history.objects import read_commit
    from giter_agent.history.tree import read_file
    from giter_agent.spec.rollouts import read_rollouts

    by_path = dict(files)
    held: dict[str, tuple[str, bytes | None]] = {}
    for rollout in read_rollouts(store, tree):
        why = rollout.holds(record.device_id, record.labels)
        if why is None:
            continue
        try:
            base = read_commit(store, rollout.baseline.encode()).tree
        except (KeyError, HistoryError):
            raise TreeError(f"{rollout.path}: baseline {rollout.baseline[:12]} is not in "
                            "this device's history", reason="RolloutBaselineUnknown") from None
        for path in rollout.resources:
            if not any(path.startswith(folder + "/") for folder in folders):
                continue  # a file this device does not read
            current = by_path.pop(path, None)
            old = read_file(store, base, path, max_blob=MAX_FILE_BYTES)
            if old is not None:
                by_path[path] = old
            held[path] = (why, current)
    rank = {folder: i for i, folder in enumerate(folders)}
    ordered = sorted(by_path.items(), key=lambda item: (
        min(rank[f] for f in folders if item[0].startswith(f + "/")), item[0]))
    return ordered, held


def _document(data: bytes | None) -> dict[str, Any]:
    """The current document of a held file ({}: none, so no status is written there)."""
    if data is None:
        return {}
    try:
        doc = load_yaml(data)
    except GiterError:
        return {}
    return doc if isinstance(doc, dict) else {}


def target(store: Any, tree: bytes, device_id: str, groups: tuple[str, ...], *,
           hold: bool = True, parsed: dict[Any, Any] | None = None) -> Targeted:
    """Everything ``tree`` holds for ``device_id`` (in ``groups``), chosen and rendered.

    ``hold=False`` ignores rollouts: the new versions, as if every wave were open.
    ``parsed`` is ``select``'s parse memo, for a caller that targets many devices.
    """
    from giter_agent.history.tree import iter_files

    record = read_record(store, tree, device_id)
    own, *group_prefixes = resource_prefixes(device_id, groups)
    folders = [own, FLEET_FOLDER, *group_prefixes]
    files: list[tuple[str, bytes]] = []
    for prefix in folders:
        files.extend(iter_files(store, tree, prefix, max_blob=MAX_FILE_BYTES))
    held: dict[str, tuple[str, bytes | None]] = {}
    if hold:
        files, held = _hold(store, tree, files, folders, record)
    chosen = select(files, record.labels, parsed)
    scope = scope_for(store, tree, record)
    out = SpecSet(invalid=list(chosen.invalid))
    for res in chosen.resources:
        if res.path in held:
            # Status goes on the file as it is now (the hub accepts nothing else): its
            # observedGeneration then says the device still runs the baseline's.
            why, current = held[res.path]
            res = res._replace(held=why, document=_document(current))
        if not uses_placeholders(res.spec):
            out.resources.append(res)
            continue
        try:
            out.resources.append(res._replace(spec=render(res.spec, scope)))
        except ResourceError as exc:
            out.invalid.append(Invalid(path=res.path, reason=exc.reason, kind=res.kind,
                                       name=res.name, message=str(exc)))
    return Targeted(record, scope, out)


def read_device_spec(store: Any, tree: bytes, device_id: str,
                     groups: tuple[str, ...]) -> SpecSet:
    """The resources of ``tree`` that reach ``device_id``, ready to reconcile."""
    return target(store, tree, device_id, groups).specset
