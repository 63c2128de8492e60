"""Parse and select the resources of one verified spec commit.

Resource files live under ``devices/<device-id>/`` and ``groups/<group>/`` of the
verified tree and are read straight from the object store (``history.tree``), through
the one YAML policy (``core.yaml_policy``). Each file holds one Kubernetes-style
document: ``apiVersion``, ``kind``, ``metadata.name``, ``spec``. A bad file fails alone:
it becomes an ``Invalid`` entry whose status says why, and the others still apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from giter_agent.core.errors import ResourceError
from giter_agent.core.layout import resource_prefixes
from giter_agent.core.yaml_policy import MAX_DOCUMENT_BYTES, dump_yaml, load_yaml

__all__ = ["API_VERSION", "MAX_DOCUMENT_BYTES", "Invalid", "Resource", "SpecSet", "dump_yaml",
           "load_yaml", "parse_resource", "prefixes", "select"]

API_VERSION = "giter.dev/v1alpha1"
NAME_RE = re.compile(r"[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class Resource:
    """One parsed resource document, addressed to this device."""

    path: str
    kind: str
    name: str
    spec: dict[str, Any]
    generation: int | None
    document: dict[str, Any]
    warnings: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class Invalid:
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


@dataclass
class SpecSet:
    """The resources of one spec commit that address this device."""

    resources: list[Resource] = field(default_factory=list)
    invalid: list[Invalid] = field(default_factory=list)


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


def select(files: list[tuple[str, bytes]]) -> SpecSet:
    """Parse resource files (most specific folder first) into a ``SpecSet``.

    A resource named in the device's own folder overrides one of the same kind and
    name from a group (the more specific wins, as with Kubernetes overlays); two groups
    defining the same resource is ambiguous, so the later one is invalid.
    """
    out = SpecSet()
    owner: dict[str, str] = {}
    for path, data in files:
        if not path.endswith((".yaml", ".yml")):
            continue
        try:
            res = parse_resource(path, data)
        except ResourceError as exc:
            out.invalid.append(Invalid(path=path, reason=exc.reason, message=str(exc)))
            continue
        first = owner.get(res.key)
        if first is not None:
            if first.startswith("devices/") and path.startswith("groups/"):
                continue  # the device's own folder overrides a group's resource
            out.invalid.append(Invalid(
                path=path, reason="DuplicateResource", kind=res.kind, name=res.name,
                message=f"{res.key} is also defined in {first}"))
            continue
        owner[res.key] = path
        out.resources.append(res)
    return out
