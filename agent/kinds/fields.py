"""A kind's spec fields declared once: the device's checks and the JSON Schema both read them.

A built-in kind lists its fields as ``Field`` values in ``FIELDS``. ``check_declared``
is what its ``validate`` calls first: unknown and missing fields, then each present
field's type, range, choices and pattern, with the same one-line messages the kinds
always gave. ``json_schema`` turns the same tuple into a JSON Schema (draft 2020-12)
that editors (yaml-language-server) and CI validators use while resources are typed,
so the schema cannot say something the device does not check. What a field cannot say
alone (``value`` only with ``state: pwm``) stays in the kind's ``validate`` and is left
out of the schema: the schema may be looser than the device, never stricter.

Called by ``giter_agent.kinds.*`` (validate) and ``giter_agent.kinds.schema``.
"""

from __future__ import annotations

import re
from typing import Any

from giter_agent.core.errors import ResourceError
from giter_agent.core.named_tuple import NamedTuple

_TYPES = ("string", "number", "integer", "boolean", "array", "object")


class Field(NamedTuple):
    """One spec field: its JSON type and the constraints the device checks on it alone.

    ``pattern`` is a regular expression the whole string must match (``fullmatch``; the
    schema anchors it); ``message`` replaces the generic complaint when a string field
    fails its type or pattern (``spec.unit must be a systemd unit name ...``). ``check``
    is one more test a value must pass, for what a pattern cannot say; it is the
    device's only and the schema does not carry it. A kind's fields are checked once,
    when its class is made (``check_types``, from ``Kind.__init_subclass__``).
    """

    name: str
    type: str
    description: str
    required: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[Any, ...] | None = None
    pattern: str | None = None
    message: str | None = None
    items: Field | None = None       # array: each item
    max_items: int | None = None     # array
    max_length: int | None = None    # string
    properties: tuple[Field, ...] = ()  # object: its fields (no others allowed)

    def validate(self, value: Any, where: str | None = None) -> None:
        """Raise ``ResourceError`` naming ``spec.<where>`` when ``value`` breaks a rule."""
        where = where or self.name
        if self.enum is not None:
            if not any(value == e and type(value) is type(e) for e in self.enum):
                raise ResourceError(f"spec.{where} must be one of "
                                    f"{', '.join(map(str, self.enum))}, got {value!r}",
                                    reason="InvalidSpec")
            return
        if self.type in ("number", "integer"):
            whole = self.type == "integer"
            ok_type = type(value) is int if whole else (
                isinstance(value, int | float) and not isinstance(value, bool))
            lo = -float("inf") if self.minimum is None else self.minimum
            hi = float("inf") if self.maximum is None else self.maximum
            if not ok_type or not lo <= value <= hi:
                what = "a whole number" if whole else "a number"
                if self.minimum is None and self.maximum is None:
                    raise ResourceError(f"spec.{where} must be {what}, got {value!r}",
                                        reason="InvalidSpec")
                show = (lambda n: str(int(n))) if whole else _num
                raise ResourceError(f"spec.{where} must be {what} from {show(lo)} to "
                                    f"{show(hi)}, got {value!r}", reason="InvalidSpec")
        elif self.type == "boolean":
            if not isinstance(value, bool):
                raise ResourceError(f"spec.{where} must be true or false",
                                    reason="InvalidSpec")
        elif self.type == "string":
            if not isinstance(value, str) \
                    or (self.max_length is not None and len(value) > self.max_length) \
                    or (self.pattern is not None and not re.fullmatch(self.pattern, value)):
                got = "" if isinstance(value, str) else f", got {value!r}"
                raise ResourceError(f"spec.{where} " + (self.message or "must be a string")
                                    + got, reason="InvalidSpec")
        elif self.type == "array":
            if not isinstance(value, list) or (self.max_items is not None
                                               and len(value) > self.max_items):
                raise ResourceError(f"spec.{where} " + (self.message or "must be a list"),
                                    reason="InvalidSpec")
            if self.items is not None:
                for item in value:
                    try:
                        self.items.validate(item, where)
                    except ResourceError:
                        raise ResourceError(f"spec.{where} " + (
                            self.message or "holds an item of the wrong kind"),
                            reason="InvalidSpec") from None
        elif self.type == "object":
            if not isinstance(value, dict):
                raise ResourceError(f"spec.{where} " + (self.message or "must be a mapping"),
                                    reason="InvalidSpec")
            known = {f.name for f in self.properties}
            if not set(value) <= known:
                raise ResourceError(f"spec.{where} " + (
                    self.message or f"may hold {' and '.join(sorted(known))}"),
                    reason="InvalidSpec")
            for sub in self.properties:
                if sub.name in value:
                    sub.validate(value[sub.name], f"{where}.{sub.name}")


def check_types(fields: tuple[Field, ...]) -> None:
    """Raise ``ValueError`` naming the first field (or item, or property) whose type is
    not a JSON Schema type: a mistake in a kind's own declaration, caught when the kind's
    class is made (built-in or plug-in) rather than when a spec first uses it."""
    for f in fields:
        if f.type not in _TYPES:
            raise ValueError(f"field {f.name}: unknown type {f.type!r}")
        check_types(f.properties + ((f.items,) if f.items is not None else ()))


def _num(value: float) -> str:
    return f"{value:g}"


def check_declared(spec: dict[str, Any], fields: tuple[Field, ...]) -> None:
    """Unknown and missing fields, then every present field's own rules, in order."""
    from giter_agent.kinds.base import check_fields

    check_fields(spec, {f.name for f in fields if f.required},
                 {f.name for f in fields if not f.required})
    for f in fields:
        if f.name in spec:
            f.validate(spec[f.name])


def value(spec: dict[str, Any], f: Field) -> Any:
    """The field's value in a checked spec, or its declared default."""
    return spec.get(f.name, f.default)


def by_name(fields: tuple[Field, ...]) -> dict[str, Field]:
    return {f.name: f for f in fields}


def field_schema(f: Field) -> dict[str, Any]:
    """One field as JSON Schema."""
    out: dict[str, Any] = {"description": f.description}
    if f.enum is not None:
        out["enum"] = list(f.enum)
    else:
        out["type"] = f.type
    if f.default is not None:
        out["default"] = f.default
    if f.minimum is not None:
        out["minimum"] = f.minimum
    if f.maximum is not None:
        out["maximum"] = f.maximum
    if f.pattern is not None:
        out["pattern"] = f"^(?:{f.pattern})$"
    if f.max_length is not None:
        out["maxLength"] = f.max_length
    if f.items is not None:
        out["items"] = field_schema(f.items)
    if f.max_items is not None:
        out["maxItems"] = f.max_items
    if f.type == "object" and f.properties:
        out["properties"] = {p.name: field_schema(p) for p in f.properties}
        out["additionalProperties"] = False
    return out


def spec_schema(fields: tuple[Field, ...], common: tuple[Field, ...]) -> dict[str, Any]:
    """The ``spec`` mapping of a kind: its fields and the common ones, nothing else."""
    everything = fields + tuple(c for c in common if c.name not in {f.name for f in fields})
    out: dict[str, Any] = {
        "type": "object",
        "properties": {f.name: field_schema(f) for f in everything},
        "additionalProperties": False,
    }
    required = [f.name for f in fields if f.required]
    if required:
        out["required"] = required
    return out
