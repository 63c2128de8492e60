"""Parse and select the resources of one verified spec commit.

Resource files live under ``devices/<device-id>/``, ``fleet/`` (selected by the device's
enrolled labels) and ``groups/<group>/`` of the verified tree and are read straight from
the object store (``history.tree``, through ``spec.targeting``), through the one YAML
policy (``core.yaml_policy``). Each file holds one Kubernetes-style
document: ``apiVersion``, ``kind``, ``metadata.name``, ``spec``. A bad file fails alone:
it becomes an ``Invalid`` entry whose status says why, and the others still apply.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from giter_agent.core.errors import ResourceError
from giter_agent.core.layout import DEVICE_FOLDER, FLEET_FOLDER, resource_prefixes
from giter_agent.core.named_tuple import NamedTuple
from giter_agent.core.yaml_policy import MAX_DOCUMENT_BYTES, dump_yaml, load_yaml

if TYPE_CHECKING:
    from giter_agent.spec.selectors import Selector

__all__ = ["API_VERSION", "MAX_DOCUMENT_BYTES", "Invalid", "Resource", "SpecSet", "dump_yaml",
           "load_yaml", "parse_resource", "prefixes", "select"]

API_VERSION = "giter.dev/v1alpha1"
NAME_RE = re.compile(r"[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?")


class Resource(NamedTuple):
    """One parsed resource document, addressed to this device."""

    path: str
    kind: str
    name: str
    spec: dict[str, Any]
    generation: int | None
    document: dict[str, Any]
    warnings: tuple[str, ...] = ()
    selector: str | None = None  # a fleet/ resource: the selector that chose this device
    overrides: tuple[str, ...] = ()  # less specific files of the same kind/name it beat
    held: str | None = None  # a rollout keeps this file at its baseline version: why

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"


class Invalid(NamedTuple):
    """A resource file that could not be used, and why (its status says so)."""

    path: str
    reason: str
    message: str
    kind: str | None = None
    name: str | None = None

    @property
    def key(self) -> str:
        if self.kind and self.name:
            return f"{self.kind}/{self.name}"
        return f"file/{self.path}"


class SpecSet:
    """The resources of one spec commit that address this device.

    (No ``__slots__``: what it derives is kept in its ``__dict__``.)
    """

    def __init__(self, resources: list[Resource] | None = None,
                 invalid: list[Invalid] | None = None) -> None:
        self.resources: list[Resource] = [] if resources is None else resources
        self.invalid: list[Invalid] = [] if invalid is None else invalid

    @cached_property
    def by_key(self) -> dict[str, Resource]:
        """Its resources by key. Worked out once: a set is not changed once read, and
        the daemon passes over the same one again and again. Read-only."""
        return {r.key: r for r in self.resources}

    @cached_property
    def generations(self) -> dict[str, int | None]:
        """``metadata.generation`` by resource key (see ``by_key``). Read-only."""
        return {r.key: r.generation for r in self.resources}

    def derived(self, name: str, make: Callable[[SpecSet], Any]) -> Any:
        """``make(self)``, worked out once per set and kept under ``name`` (what a pass
        derives from the spec alone, such as its maintenance windows). Read-only."""
        memo = self.__dict__.setdefault("_derived", {})
        try:
            return memo[name]
        except KeyError:
            value = memo[name] = make(self)
            return value


def parse_resource(path: str, data: bytes) -> Resource:
    """Parse one resource file; ``ResourceError`` says what is wrong with it."""
    doc = load_yaml(data)
    if not isinstance(doc, dict):
        raise ResourceError("the document must be a mapping", reason="InvalidResource")
    unknown = set(doc) - {"apiVersion", "kind", "metadata", "spec", "status"}
    if unknown:
        raise ResourceError(f"unknown top-level field(s): {', '.join(sorted(map(str, unknown)))}",
                            reason="InvalidResource")
    if doc.get("apiVersion") != API_VERSION:
        raise ResourceError(f"apiVersion must be {API_VERSION!r}, got {doc.get('apiVersion')!r}",
                            reason="UnsupportedAPIVersion")
    kind = doc.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ResourceError("kind is missing", reason="InvalidResource")
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        raise ResourceError("metadata is missing", reason="InvalidResource")
    name = meta.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ResourceError(
            f"metadata.name {name!r} must be lower-case letters, digits, '-' or '.' (max 63)",
            reason="InvalidResource")
    generation = meta.get("generation")
    if generation is not None and (type(generation) is not int or generation < 0):
        raise ResourceError("metadata.generation must be a non-negative integer",
                            reason="InvalidResource")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise ResourceError("spec is missing or not a mapping", reason="InvalidResource")
    warnings: tuple[str, ...] = ()
    if "status" in doc:
        # status is the device's to write; on the spec branch it is ignored, and said so.
        warnings = ("status on the spec branch is ignored (status is written by the device)",)
    return Resource(path=path, kind=kind, name=name, spec=spec, generation=generation,
                    document=doc, warnings=warnings)


def prefixes(device_id: str, groups: tuple[str, ...]) -> list[str]:
    """Tree folders addressed to a device, most specific first (``core.layout``)."""
    return resource_prefixes(device_id, groups)


LEVELS = ("device", "selector", "group")  # precedence, most specific first


def level_of(path: str) -> int:
    """0 for ``devices/``, 1 for ``fleet/`` (by selector), 2 for ``groups/``."""
    if path.startswith(DEVICE_FOLDER + "/"):
        return 0
    return 1 if path.startswith(FLEET_FOLDER + "/") else 2


def selector_of(res: Resource) -> Selector | None:
    """The selector of a ``fleet/`` resource (None elsewhere).

    ``ResourceError(InvalidSelector)`` for a missing or broken selector, and for a
    selector outside ``fleet/`` (where it would silently mean nothing).
    """
    from giter_agent.spec.selectors import parse_selector

    raw = res.document["metadata"].get("selector")
    if level_of(res.path) != 1:
        if raw is not None:
            raise ResourceError(f"metadata.selector belongs in {FLEET_FOLDER}/ only; "
                                f"{res.path} reaches its devices by folder",
                                reason="InvalidSelector")
        return None
    if raw is None:
        raise ResourceError(f"a {FLEET_FOLDER}/ resource needs metadata.selector (matchLabels"
                            " and/or matchExpressions)", reason="InvalidSelector")
    return parse_selector(raw, "metadata")


def _selected(res: Resource, labels: Mapping[str, str] | None) -> Resource | None:
    """``res`` if it reaches a device with ``labels`` (a ``fleet/`` one: by its selector)."""
    selector = selector_of(res)
    if selector is None:
        return res
    if labels is None or not selector.matches(labels):
        return None
    return res._replace(selector=selector.text())


def _parse(path: str, data: bytes,
           memo: dict[tuple[str, bytes], Resource | ResourceError] | None) -> Resource:
    if memo is None:
        return parse_resource(path, data)
    found = memo.get((path, data))
    if found is None:
        try:
            found = parse_resource(path, data)
        except ResourceError as exc:
            found = exc
        memo[(path, data)] = found
    if isinstance(found, ResourceError):
        raise found
    return found


def select(files: list[tuple[str, bytes]], labels: Mapping[str, str] | None = None,
           parsed: dict[tuple[str, bytes], Resource | ResourceError] | None = None
           ) -> SpecSet:
    """Parse resource files (most specific folder first) into a ``SpecSet``.

    Precedence for one kind/name: the device's own folder beats a ``fleet/`` resource
    whose ``metadata.selector`` matches ``labels`` (the device's enrolled labels), which
    beats a group's; the winner lists what it overrode. At one level two definitions
    are ambiguous: two files of one folder or two groups keep the first and refuse the
    later one (``DuplicateResource``); two matching selectors refuse the kind/name
    outright (``AmbiguousResource``), since neither is more the publisher's intent.
    ``parsed`` memoises each file's parse across calls (the publisher selects for every
    enrolled device from one tree).
    """
    out = SpecSet()
    owner: dict[str, Resource] = {}
    shadowed: dict[str, list[str]] = {}
    rivals: dict[str, list[str]] = {}
    for path, data in files:
        if not path.endswith((".yaml", ".yml")):
            continue
        try:
            res = _selected(_parse(path, data, parsed), labels)
        except ResourceError as exc:
            out.invalid.append(Invalid(path=path, reason=exc.reason, message=str(exc)))
            continue
        if res is None:
            continue  # a fleet/ resource for other devices
        first = owner.get(res.key)
        if first is not None:
            if level_of(first.path) < level_of(path):
                shadowed.setdefault(res.key, []).append(path)
                continue  # the more specific definition wins
            if level_of(path) == 1:
                rivals.setdefault(res.key, [first.path]).append(path)
                continue
            out.invalid.append(Invalid(
                path=path, reason="DuplicateResource", kind=res.kind, name=res.name,
                message=f"{res.key} is also defined in {first.path}"))
            continue
        owner[res.key] = res
    for key, res in owner.items():
        if key in rivals:
            paths = rivals[key]
            out.invalid.append(Invalid(
                path=paths[0], reason="AmbiguousResource", kind=res.kind, name=res.name,
                message=f"{key}: the selectors of {' and '.join(paths)} both match this "
                "device; narrow one, or put the device's own in devices/<id>/"))
            continue
        out.resources.append(res._replace(overrides=tuple(shadowed.get(key, ()))))
    return out
