"""Parse and select the resources of one verified spec commit.

Resource files live under ``devices/<device-id>/`` and ``groups/<group>/`` of the
verified tree and are read straight from the object store (``history.tree``). The YAML
loader refuses aliases (billion-laughs) and duplicate keys (two readers could disagree
on which wins), and caps size and nesting depth. Each file holds one Kubernetes-style
document: ``apiVersion``, ``kind``, ``metadata.name``, ``spec``. A bad file fails alone:
it becomes an ``Invalid`` entry whose status says why, and the others still apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from giter_agent.core.errors import ResourceError

API_VERSION = "giter.dev/v1alpha1"
MAX_DOCUMENT_BYTES = 256 * 1024
MAX_DEPTH = 32
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


def _loader_class() -> type:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader without aliases or duplicate keys, with a depth cap."""

        def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise ResourceError(
                    f"line {event.start_mark.line + 1}: YAML aliases are not allowed",
                    reason="YAMLAliasRefused",
                )
            self._depth = getattr(self, "_depth", 0) + 1
            try:
                if self._depth > MAX_DEPTH:
                    raise ResourceError(f"nested deeper than {MAX_DEPTH} levels",
                                        reason="YAMLTooDeep")
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

        def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:
                    raise ResourceError(
                        f"line {key_node.start_mark.line + 1}: unhashable mapping key",
                        reason="InvalidYAML") from None
                if duplicate:
                    raise ResourceError(
                        f"line {key_node.start_mark.line + 1}: duplicate key {key!r}",
                        reason="YAMLDuplicateKey",
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    # YAML 1.2 booleans: only true/false. YAML 1.1 (PyYAML's default) reads `state: on`
    # and `country: no` as booleans, which is never what a resource author meant.
    StrictLoader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    StrictLoader.add_implicit_resolver(
        "tag:yaml.org,2002:bool",
        re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    return StrictLoader


_LOADER: type | None = None


def load_yaml(data: bytes) -> Any:
    """Parse one YAML document strictly (no aliases, no duplicate keys, capped)."""
    global _LOADER
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ResourceError(f"document is {len(data)} bytes, over the {MAX_DOCUMENT_BYTES} cap",
                            reason="DocumentTooLarge")
    import yaml

    if _LOADER is None:
        _LOADER = _loader_class()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ResourceError("not UTF-8 text", reason="InvalidYAML") from None
    loader = _LOADER(text)
    try:
        if not loader.check_node():
            raise ResourceError("empty document", reason="InvalidYAML")
        node = loader.get_node()
        if loader.check_node():
            raise ResourceError("more than one YAML document in the file", reason="InvalidYAML")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ResourceError(f"not valid YAML: {exc}".replace("\n", " "),
                            reason="InvalidYAML") from None
    finally:
        loader.dispose()


def dump_yaml(document: dict[str, Any]) -> bytes:
    """Serialise a document the way status files are written (stable key order)."""
    import yaml

    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False,
                          allow_unicode=True).encode("utf-8")


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
    warnings = ()
    if "status" in doc:
        # status is the device's to write; on the spec branch it is ignored, and said so.
        warnings = ("status on the spec branch is ignored (status is written by the device)",)
    return Resource(path=path, kind=kind, name=name, spec=spec, generation=generation,
                    document=doc, warnings=warnings)


def prefixes(device_id: str, groups: tuple[str, ...]) -> list[str]:
    """Tree folders addressed to a device, most specific first."""
    return [f"devices/{device_id}"] + [f"groups/{g}" for g in groups]


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
