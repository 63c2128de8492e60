"""JSON Schemas of the resource kinds, generated from the kinds' own field declarations.

``resource_schema`` describes one whole resource file of a kind (``apiVersion``, ``kind``,
``metadata``, ``spec``) the way ``giter_agent.spec.resources.parse_resource`` and the
kind's ``validate`` read it; the ``spec`` part is ``Kind.spec_schema``, made from the
same ``FIELDS`` tuple the device checks (``giter_agent.kinds.fields``). ``schema_files``
lays them out as files: ``<kind>.json`` per kind and ``resource.json``, which picks by
``kind`` and is the one to point an editor at. The files shipped in the package
(``giter_agent/kinds/schemas/``) are this module's output, and a test regenerates and
compares them. ``giter-bundle init`` writes them into the fleet repository's
``.giter/schemas/``.

The schemas carry what each field says alone (type, range, choices, pattern, required,
unknown names); rules between fields stay the device's and lint's, so a schema never
rejects what a device accepts.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

DRAFT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_DIR = "schemas"
RESOURCE_FILE = "resource.json"


def _document(kind_name: str, spec: dict[str, Any], description: str) -> dict[str, Any]:
    from giter_agent.spec.resources import API_VERSION, NAME_RE

    return {
        "type": "object",
        "description": description,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": API_VERSION},
            "kind": {"const": kind_name},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "pattern": f"^(?:{NAME_RE.pattern})$",
                             "description": "lower-case letters, digits, '-' or '.' "
                                            "(max 63); unique per kind"},
                    "generation": {"type": "integer", "minimum": 0,
                                   "description": "bumped when spec changes "
                                                  "(giter-bundle commit does it)"},
                    "selector": {"type": "object",
                                 "properties": {"matchLabels": {"type": "object"},
                                                "matchExpressions": {"type": "array"}},
                                 "additionalProperties": False,
                                 "description": "fleet/ only: the devices whose enrolled "
                                                "labels match get this resource "
                                                "(docs/fleet.md)"},
                },
            },
            "spec": spec,
            "status": {"description": "written by the device; ignored on the spec branch"},
        },
    }


def resource_schema(kind: Any) -> dict[str, Any]:
    """The JSON Schema of one resource file of ``kind`` (a ``Kind`` class or instance)."""
    return {"$schema": DRAFT, "$id": f"{kind.kind.lower()}.json",
            "title": f"giter {kind.kind} resource",
            **_document(kind.kind, kind.spec_schema(), kind.DESCRIPTION or kind.kind)}


def combined_schema(kinds: dict[str, Any]) -> dict[str, Any]:
    """One schema for any resource file: ``kind`` picks the kind's schema."""
    from giter_agent.spec.resources import API_VERSION

    defs = {name: _document(name, kind.spec_schema(), kind.DESCRIPTION or name)
            for name, kind in sorted(kinds.items())}
    return {
        "$schema": DRAFT, "$id": RESOURCE_FILE, "title": "giter resource",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"apiVersion": {"const": API_VERSION},
                       "kind": {"enum": sorted(kinds)}},
        "allOf": [{"if": {"properties": {"kind": {"const": name}}, "required": ["kind"]},
                   "then": {"$ref": f"#/$defs/{name}"}} for name in sorted(kinds)],
        "$defs": defs,
    }


def schema_files(kinds: dict[str, Any]) -> dict[str, bytes]:
    """file name -> JSON text: one per kind with declared fields, and the combined one."""
    declared = {name: kind for name, kind in kinds.items() if kind.FIELDS is not None}
    out = {f"{name.lower()}.json": resource_schema(kind) for name, kind in declared.items()}
    # every kind installed here: one without declared fields takes any spec mapping, so
    # the schema never refuses a resource the device would read
    out[RESOURCE_FILE] = combined_schema(kinds)
    return {name: (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False)
                   + "\n").encode("utf-8") for name, doc in sorted(out.items())}


def shipped() -> dict[str, bytes]:
    """The schema files in the installed package (built-in kinds only)."""
    folder = resources.files("giter_agent.kinds").joinpath(SCHEMA_DIR)
    return {entry.name: entry.read_bytes() for entry in folder.iterdir()
            if entry.name.endswith(".json")}


def builtin_schema_files() -> dict[str, bytes]:
    """What ``shipped()`` must hold: the schemas of the built-in kinds, generated now."""
    from giter_agent.kinds import builtin_kinds

    return schema_files(builtin_kinds())


def main() -> None:
    """``python -m giter_agent.kinds.schema``: rewrite the shipped schema files."""
    from pathlib import Path

    folder = Path(__file__).with_name(SCHEMA_DIR)
    folder.mkdir(exist_ok=True)
    for old in folder.glob("*.json"):
        old.unlink()
    for name, data in builtin_schema_files().items():
        (folder / name).write_bytes(data)
        print(f"wrote {folder / name}")


if __name__ == "__main__":
    main()
