"""The one YAML policy, shared by the device and the publisher.

Resource files, status documents and enrolment records are all read here: YAML 1.2
booleans (only ``true``/``false``; ``state: on`` stays the string ``"on"``), no aliases
(billion-laughs), no duplicate keys (two readers could disagree on which wins), one
document per file, capped size and nesting depth. The device's reader, the publisher's
``lint`` and the hub's status-import ownership check all call ``load_yaml``, so a document
one side accepts means the same to the other (issue: the publisher once read status with
YAML 1.1 rules and refused honest status as a forgery). Errors are ``ResourceError``.
"""

from __future__ import annotations

import re
from typing import Any

from giter_agent.core.errors import ResourceError

MAX_DOCUMENT_BYTES = 256 * 1024
MAX_DEPTH = 32


def _loader_class() -> type:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader without aliases or duplicate keys, with a depth cap."""

        def compose_node(self, parent: Any, index: Any) -> Any:
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

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
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
