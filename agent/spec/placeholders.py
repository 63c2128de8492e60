"""Per-device placeholders in a resource's ``spec``: substitution only, no code.

Three names are filled in, in every string of a ``spec`` (mapping keys and
``metadata`` are never touched)::

    ${device.id}       the device id
    ${labels.<key>}    the device's enrolled label <key> (its signed Device document)
    ${values.<key>}    a value from the values files (spec.values: device > label > defaults)

A string that is exactly one placeholder takes the value's own YAML type (``pin:
${values.led_pin}`` gives the integer 17); inside longer text the value is written as
YAML would (``true``, ``17``). ``$${`` is a literal ``${``. Any other ``${...}`` - a
shell's ``${HOME}``, a systemd ``${MAINPID}`` - is left exactly as written, so existing
files keep their meaning; ``${device.<other>}`` and an unclosed ``${device.``,
``${labels.`` or ``${values.`` are errors (``InvalidPlaceholder``), never text.
A name with no value is ``MissingValue`` and a values key two label files set to
different values is ``AmbiguousValue``: the resource is refused, never rendered with an
empty string. There are no defaults, conditionals, loops or functions.

One implementation for device and publisher: ``spec.targeting`` renders what a device
applies, and ``giter-bundle render``/``lint`` call the same code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from giter_agent.core.errors import ResourceError
from giter_agent.core.named_tuple import NamedTuple

Scalar = str | int | float | bool
VALUE_KEY_PATTERN = r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?"  # compiled when first used
NAMESPACES = ("device", "labels", "values")
# ``$${`` (an escape), or ``${`` + one of our namespaces + ``.``: everything else is text.
_TOKEN = re.compile(r"\$\$\{|\$\{(device|labels|values)\.")
_NAME = re.compile(r"([A-Za-z0-9_.-]*)\}")


class Scope(NamedTuple):
    """What one device's placeholders resolve to."""

    device_id: str
    labels: Mapping[str, str] = MappingProxyType({})
    values: Mapping[str, Scalar] = MappingProxyType({})
    ambiguous: Mapping[str, str] = MappingProxyType({})  # key -> why
    values_problem: str | None = None  # a values file the device reads is broken

    def lookup(self, namespace: str, name: str) -> Scalar:
        ref = f"${{{namespace}.{name}}}"
        if namespace == "device":
            if name != "id":
                raise ResourceError(f"{ref}: the only device field is ${{device.id}}",
                                    reason="InvalidPlaceholder")
            return self.device_id
        if namespace == "labels":
            if name not in self.labels:
                raise ResourceError(f"{ref}: device {self.device_id} has no label {name!r} "
                                    "(giter-bundle label)", reason="MissingValue")
            return self.labels[name]
        if self.values_problem is not None:
            raise ResourceError(f"{ref}: {self.values_problem}", reason="InvalidValues")
        if name in self.ambiguous:
            raise ResourceError(f"{ref}: {self.ambiguous[name]}", reason="AmbiguousValue")
        if name not in self.values:
            raise ResourceError(f"{ref}: no value {name!r} for device {self.device_id} (in "
                                f"values/devices/{self.device_id}.yaml, a values/labels/ "
                                "file of its labels, or values/defaults.yaml)",
                                reason="MissingValue")
        return self.values[name]


def as_text(value: Scalar) -> str:
    """A value inside longer text, written as YAML would write it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_text(text: str, scope: Scope) -> Any:
    """``text`` with its placeholders filled; a lone placeholder keeps the value's type."""
    if "${" not in text:
        return text
    out: list[str] = []
    pos = 0
    whole: Scalar | None = None
    for match in _TOKEN.finditer(text):
        if match.start() < pos:
            continue
        out.append(text[pos:match.start()])
        if match.group(0) == "$${":
            out.append("${")
            pos = match.end()
            continue
        namespace = match.group(1)
        name = _NAME.match(text, match.end())
        if name is None or not name.group(1):
            shown = text[match.start():match.end() + 20]
            raise ResourceError(f"{shown!r}...: a placeholder is ${{{namespace}.<name>}}, "
                                "closed by '}' (write $${ for a literal ${)",
                                reason="InvalidPlaceholder")
        value = scope.lookup(namespace, name.group(1))
        if match.start() == 0 and name.end() == len(text):
            whole = value
        out.append(as_text(value))
        pos = name.end()
    out.append(text[pos:])
    return whole if whole is not None else "".join(out)


def render(spec: Any, scope: Scope) -> Any:
    """A copy of ``spec`` with every string's placeholders filled (``ResourceError``
    names the first one that cannot be)."""
    if isinstance(spec, str):
        return render_text(spec, scope)
    if isinstance(spec, dict):
        return {k: render(v, scope) for k, v in spec.items()}
    if isinstance(spec, list):
        return [render(v, scope) for v in spec]
    return spec


def uses_placeholders(spec: Any) -> bool:
    """Whether rendering could change ``spec`` (a quick test before copying it)."""
    if isinstance(spec, str):
        return _TOKEN.search(spec) is not None
    if isinstance(spec, dict):
        return any(uses_placeholders(v) for v in spec.values())
    if isinstance(spec, list):
        return any(uses_placeholders(v) for v in spec)
    return False
