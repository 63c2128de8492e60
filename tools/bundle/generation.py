"""Bump ``metadata.generation`` of a resource whose ``spec`` changed, editing only that number.

Kubernetes bumps a resource's generation whenever its spec changes, and the agent
echoes it as ``status.observedGeneration`` once that generation has been applied, so a
publisher can tell "applied" from "applied an older spec". Here there is no API server:
``giter-bundle commit`` compares each resource file with the branch tip and bumps it.

The rule: a new resource without a generation gets 1; a resource whose spec differs
from the tip gets the tip's generation + 1, unless the author already set a higher one.
A change outside ``spec`` (labels, comments) bumps nothing, as in Kubernetes.

The file is edited as text at the positions the YAML parser reports, so comments,
quoting and key order stay exactly as the author wrote them; the result is parsed
again and must equal the original document with only the generation changed.

Called by ``giter-bundle commit``.
"""

from __future__ import annotations

import copy
from typing import Any

from giter_agent.core.errors import GiterError
from giter_agent.spec.resources import load_yaml
from giter_bundle.errors import PublisherError


def _document(data: bytes | None) -> dict[str, Any] | None:
    """The parsed resource, or None when it is not one (lint reports why)."""
    if data is None:
        return None
    try:
        doc = load_yaml(data)
    except GiterError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict):
        return None
    return doc


def _generation(doc: dict[str, Any]) -> int | None:
    value = doc["metadata"].get("generation")
    return value if type(value) is int else None


def wanted_generation(old: bytes | None, new: bytes) -> int | None:
    """The generation ``new`` should carry, or None when it needs no change."""
    after = _document(new)
    if after is None or "spec" not in after:
        return None
    before = _document(old)
    current = _generation(after)
    if before is None:
        return None if current is not None else 1
    if before.get("spec") == after.get("spec"):
        return None
    base = _generation(before) or 0
    if current is not None and current > base:
        return None  # the author bumped it already
    return base + 1


def set_generation(data: bytes, generation: int, path: str = "resource") -> bytes:
    """``data`` with ``metadata.generation`` set to ``generation``, nothing else changed."""
    import yaml

    text = data.decode("utf-8")
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    meta = None
    if isinstance(root, yaml.MappingNode):
        meta = next((v for k, v in root.value if k.value == "metadata"), None)
    if not isinstance(meta, yaml.MappingNode):
        raise PublisherError(f"{path}: metadata is not a mapping", reason="CannotBumpGeneration")
    value = next((v for k, v in meta.value if k.value == "generation"), None)
    if value is not None:
        start, end = value.start_mark.index, value.end_mark.index
        edited = text[:start] + str(generation) + text[end:]
    elif meta.value:
        first = meta.value[0][0]
        name = next((v for k, v in meta.value if k.value == "name"), None)
        if not meta.flow_style and name is not None and name.start_mark.line == name.end_mark.line:
            # Below the name's line, where Kubernetes tools put it.
            newline = text.find("\n", name.end_mark.index)
            line = " " * first.start_mark.column + f"generation: {generation}"
            edited = (text + "\n" + line + "\n" if newline < 0
                      else text[:newline + 1] + line + "\n" + text[newline + 1:])
        else:
            at = first.start_mark.index
            insert = (f"generation: {generation}, " if meta.flow_style
                      else f"generation: {generation}\n" + " " * first.start_mark.column)
            edited = text[:at] + insert + text[at:]
    else:  # metadata: {}
        at = meta.start_mark.index + 1
        edited = text[:at] + f"generation: {generation}" + text[at:]
    out = edited.encode("utf-8")
    expected = copy.deepcopy(load_yaml(data))
    expected["metadata"]["generation"] = generation
    if load_yaml(out) != expected:
        raise PublisherError(f"{path}: could not set metadata.generation without changing "
                             "anything else; set it by hand", reason="CannotBumpGeneration")
    return out


def bump(old: bytes | None, new: bytes, path: str = "resource") -> tuple[bytes, int] | None:
    """(new content, generation) when ``new`` needs a bump, else None."""
    generation = wanted_generation(old, new)
    if generation is None:
        return None
    return set_generation(new, generation, path), generation
