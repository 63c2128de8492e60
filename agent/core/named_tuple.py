"""``NamedTuple``: typing's class form, made with less work at start-up.

``class Limits(NamedTuple): ...`` makes the class ``typing.NamedTuple`` makes:
``collections.namedtuple`` of the annotated fields with their defaults, then what else
the class body holds (its docstring, methods, properties, constants). What it leaves
out is typing's check of each field's annotation. Every module here is compiled with
``from __future__ import annotations``, so each annotation is a string, and typing
checks a string by making a ``ForwardRef`` of it, which compiles it: 70-80 µs of a
six-field class, about 5 ms of each start of a sync, which makes some forty of these
records (docs/performance.md, "Records made without typing's per-field check"). That
check never looked at a field's value, only at whether its annotation names a type,
which the type checker does better.

Type checkers see ``typing.NamedTuple`` itself. Refused as typing refuses them: a
field without a default after one with a default, and a class body that sets what
``namedtuple`` owns (``_fields``, ``_replace``, ``__new__``...). Not offered: generic
named tuples and other bases, which nothing here uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["NamedTuple"]

if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
else:
    import collections

    # What typing refuses in a NamedTuple's body, and what it does not copy from it.
    _OWNED = frozenset({"__new__", "__init__", "__slots__", "__getnewargs__", "_fields",
                        "_field_defaults", "_make", "_replace", "_asdict", "_source"})
    _NOT_COPIED = frozenset({"__module__", "__name__", "__qualname__", "__annotations__"})

    class _Maker(type):
        def __new__(cls, name: str, bases: tuple[type, ...], ns: dict[str, Any]) -> Any:
            if not bases:  # NamedTuple itself
                return super().__new__(cls, name, bases, ns)
            if bases != (NamedTuple,):
                raise TypeError(f"{name}: a NamedTuple has no other base")
            annotations = ns.get("__annotations__", {})
            defaults = []
            for field in annotations:
                if field in ns:
                    defaults.append(ns[field])
                elif defaults:
                    raise TypeError(f"{name}: non-default namedtuple field {field} cannot "
                                    "follow default field(s)")
            made = collections.namedtuple(name, annotations, defaults=defaults,
                                          module=ns["__module__"])
            made.__qualname__ = ns.get("__qualname__", name)
            made.__annotations__ = dict(annotations)
            for key, value in ns.items():
                if key in _OWNED:
                    raise AttributeError(f"Cannot overwrite NamedTuple attribute {key}")
                if key not in _NOT_COPIED and key not in annotations:
                    setattr(made, key, value)
            return made

    class NamedTuple(metaclass=_Maker):
        """The base of a record class (see the module)."""
