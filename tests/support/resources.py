"""Resource documents written as an operator writes them: real block YAML, plain scalars.

Tests once wrote specs as JSON inside YAML (``spec: {"state": "on"}``), which quoted
every value and so hid that the publisher read ``state: on`` differently from the
device. ``to_yaml`` writes what a person would: ``state: on`` unquoted, quotes only
where YAML 1.2 (the project's policy, ``core.yaml_policy``) would read something else.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

API_VERSION = "giter.dev/v1alpha1"
API = f"apiVersion: {API_VERSION}\n"

# A scalar a person leaves unquoted: YAML 1.2 reads it back as the same string.
_PLAIN = re.compile(r"[A-Za-z_/.][A-Za-z0-9_/.@+-]*( [A-Za-z0-9_/.@+-]+)*")
_YAML12_NOT_STRING = re.compile(r"(true|false|True|False|TRUE|FALSE|null|Null|NULL|~"
                                r"|[-+]?[0-9][0-9_.eE+-]*|\.inf|\.nan)")


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, float):
        text = repr(value)  # PyYAML's float needs a dot: 1e-05 is written 1.0e-05
        return text if "." in text or "e" not in text else text.replace("e", ".0e", 1)
    text = str(value)
    if _PLAIN.fullmatch(text) and not _YAML12_NOT_STRING.fullmatch(text):
        return text
    return json.dumps(text)  # a JSON string is a YAML double-quoted string


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block YAML for mappings and lists of scalars, mappings and lists."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return pad + "{}\n"
        out = []
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                out.append(f"{pad}{key}:\n{to_yaml(item, indent + 2)}")
            else:
                out.append(f"{pad}{key}: {_inline(item)}\n")
        return "".join(out)
    if isinstance(value, list):
        out = []
        for item in value:
            if isinstance(item, dict) and item:
                body = to_yaml(item, indent + 2)
                out.append(f"{pad}- {body[indent + 2:]}")
            else:
                out.append(f"{pad}- {_inline(item)}\n")
        return "".join(out)
    return pad + _scalar(value) + "\n"


def _inline(item: Any) -> str:
    if isinstance(item, dict):
        return "{}"
    if isinstance(item, list):
        return "[]"
    return _scalar(item)


def doc(kind: str, name: str, spec: dict[str, Any], generation: int | None = 1) -> bytes:
    """One resource document."""
    meta: dict[str, Any] = {"name": name}
    if generation is not None:
        meta["generation"] = generation
    return to_yaml({"apiVersion": API_VERSION, "kind": kind, "metadata": meta,
                    "spec": spec}).encode()


def motd(root: Path, text: str, name: str = "motd", *, mode: str | None = "0644",
         generation: int | None = None) -> str:
    """A File resource writing ``text`` to ``root/<name>``."""
    spec: dict[str, Any] = {"path": f"{root}/{name}", "content": text}
    if mode is not None:
        spec["mode"] = mode
    return doc("File", name, spec, generation).decode()


BEACON = to_yaml({"apiVersion": API_VERSION, "kind": "Output", "metadata": {"name": "beacon"},
                  "spec": {"pin": "led1", "state": "on"}})
