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

import importlib
import re
from typing import Any

from giter_agent.core.errors import ResourceError

MAX_DOCUMENT_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_INT = 2**64  # integers fit in 64 bits (signed or not)


def _cyaml() -> Any:
    """PyYAML's libyaml binding, or None when it was built without libyaml."""
    try:
        return importlib.import_module("yaml.cyaml")
    except ImportError:
        return None


def _loader_class(use_libyaml: bool = True) -> type:
    """The strict loader: libyaml's C scanner and parser when PyYAML has them.

    Only the event stream comes from libyaml (several times faster, less memory: a
    publisher reading ten thousand devices' status parses some forty thousand files);
    composing nodes, where aliases and depth are refused, and constructing values,
    where duplicate keys are refused and booleans are YAML 1.2's, stay in Python and
    are the same code either way. ``use_libyaml=False`` is the pure-Python loader.
    """
    import yaml
    from yaml.composer import Composer
    from yaml.constructor import SafeConstructor
    from yaml.resolver import Resolver

    class Strict:
        """SafeLoader's rules without aliases or duplicate keys, with a depth cap."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):  # type: ignore[attr-defined]
                event = self.peek_event()  # type: ignore[attr-defined]
                raise ResourceError(
                    f"line {event.start_mark.line + 1}: YAML aliases are not allowed",
                    reason="YAMLAliasRefused",
                )
            self._depth = getattr(self, "_depth", 0) + 1
            try:
                if self._depth > MAX_DEPTH:
                    raise ResourceError(f"nested deeper than {MAX_DEPTH} levels",
                                        reason="YAMLTooDeep")
                return Composer.compose_node(self, parent, index)  # type: ignore[arg-type]
            finally:
                self._depth -= 1

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)  # type: ignore[attr-defined]
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
            return SafeConstructor.construct_mapping(self, node, deep=deep)  # type: ignore[arg-type]

        def construct_yaml_int(self, node: Any) -> int:
            # Hex, octal and sexagesimal integers have no digit limit in Python: one of
            # 100,000 digits would load, then crash whatever prints or stores it.
            value = SafeConstructor.construct_yaml_int(self, node)  # type: ignore[arg-type]
            if not -MAX_INT < value < MAX_INT:
                raise ResourceError(f"line {node.start_mark.line + 1}: integer out of range"
                                    " (more than 64 bits)", reason="InvalidYAML")
            return value

    c_parser: Any = None
    if use_libyaml:
        # None when PyYAML was built without libyaml: the pure-Python parser then.
        c_parser = getattr(_cyaml(), "CParser", None)
    loader: Any
    if c_parser is not None:
        class StrictCLoader(Strict, Composer, c_parser, SafeConstructor, Resolver):
            """Composer's methods come before CParser's, which would compose in C."""

            def __init__(self, stream: str) -> None:
                c_parser.__init__(self, stream)
                Composer.__init__(self)
                SafeConstructor.__init__(self)
                Resolver.__init__(self)

        loader = StrictCLoader
    else:
        class StrictPyLoader(Strict, yaml.SafeLoader):
            """The pure-Python reader, scanner and parser."""

        loader = StrictPyLoader

    loader.add_constructor("tag:yaml.org,2002:int", loader.construct_yaml_int)
    # YAML 1.2 booleans: only true/false. YAML 1.1 (PyYAML's default) reads `state: on`
    # and `country: no` as booleans, which is never what a resource author meant.
    loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool",
        re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    return loader


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
    loader = None
    try:
        # The reader refuses control characters (NUL, ESC, form feed) already here,
        # so the loader is built inside the try.
        loader = _LOADER(text)
        if not loader.check_node():
            raise ResourceError("empty document", reason="InvalidYAML")
        node = loader.get_node()
        if loader.check_node():
            raise ResourceError("more than one YAML document in the file", reason="InvalidYAML")
        return loader.construct_document(node)
    except ResourceError:
        raise
    except (yaml.YAMLError, ValueError, OverflowError) as exc:
        # ValueError/OverflowError: a constructor choking on a scalar it matched (an
        # integer of more than 4,300 digits, month 13, a time zone of 99 hours).
        raise ResourceError(f"not valid YAML: {_one_line(exc)}", reason="InvalidYAML") from None
    finally:
        if loader is not None:
            loader.dispose()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def dump_yaml(document: dict[str, Any]) -> bytes:
    """Serialise a document the way status files are written (stable key order)."""
    import yaml

    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False,
                          allow_unicode=True).encode("utf-8")
