"""giter_agent.core.named_tuple makes the class typing.NamedTuple makes, without typing's
per-field work, and every record of the project is made by it."""

from __future__ import annotations

import ast
import pickle
import typing
from pathlib import Path

import pytest

from giter_agent.core import named_tuple
from giter_agent.core.named_tuple import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*(ROOT / "agent").rglob("*.py"), *(ROOT / "tools").rglob("*.py"),
                  *(ROOT / "board-configs").rglob("*.py")])


class Ours(NamedTuple):
    """A record."""

    name: str
    count: int = 0
    tags: tuple[str, ...] = ()

    LIMIT = 10  # a class constant, not a field

    @property
    def label(self) -> str:
        return f"{self.name}:{self.count}"

    def more(self, n: int) -> Ours:
        return self._replace(count=self.count + n)

    @classmethod
    def named(cls, name: str) -> Ours:
        return cls(name)


class Typings(typing.NamedTuple):
    """A record."""

    name: str
    count: int = 0
    tags: tuple[str, ...] = ()

    LIMIT = 10

    @property
    def label(self) -> str:
        return f"{self.name}:{self.count}"

    def more(self, n: int) -> Typings:
        return self._replace(count=self.count + n)

    @classmethod
    def named(cls, name: str) -> Typings:
        return cls(name)


def test_the_class_is_the_one_typing_makes():
    for cls in (Ours, Typings):
        assert cls.__bases__ == (tuple,)
        assert cls._fields == ("name", "count", "tags")
        assert cls._field_defaults == {"count": 0, "tags": ()}
        assert cls.__doc__ == "A record."
        assert cls.__module__ == __name__
        assert list(cls.__annotations__) == ["name", "count", "tags"]
        assert cls.LIMIT == 10 and "LIMIT" not in cls._fields
        r = cls.named("a").more(2)
        assert r == ("a", 2, ()) and r.label == "a:2" and r._asdict()["count"] == 2
        assert repr(r) == f"{cls.__name__}(name='a', count=2, tags=())"
        assert pickle.loads(pickle.dumps(r)) == r
        with pytest.raises(AttributeError):
            r.name = "b"  # type: ignore[misc]
        with pytest.raises(TypeError):
            cls()  # type: ignore[call-arg]
    assert Ours.__qualname__ == "Ours" and Typings.__qualname__ == "Typings"


def test_what_typing_refuses_is_refused():
    with pytest.raises(TypeError, match="cannot follow default"):
        class _Order(NamedTuple):
            a: int = 0
            b: int  # type: ignore[misc]
    with pytest.raises(AttributeError, match="_replace"):
        class _Owned(NamedTuple):
            a: int

            def _replace(self, **kw):  # type: ignore[override]
                return self
    with pytest.raises(TypeError, match="no other base"):
        class _Mixed(NamedTuple, dict):  # type: ignore[misc]
            a: int


def test_no_annotation_is_compiled(monkeypatch):
    made = []
    real = typing.ForwardRef.__init__

    def counting(self, *args, **kwargs):
        made.append(args[0])
        real(self, *args, **kwargs)

    monkeypatch.setattr(typing.ForwardRef, "__init__", counting)

    class _Record(NamedTuple):
        a: dict[str, int]
        b: tuple[str, ...] = ()

    assert made == [] and _Record({"x": 1}).b == ()
    assert named_tuple.NamedTuple is NamedTuple


def _from_typing(tree: ast.Module) -> list[int]:
    """Lines that take ``NamedTuple`` from typing: ``from typing import NamedTuple`` or
    ``typing.NamedTuple``."""
    return [node.lineno for node in ast.walk(tree)
            if (isinstance(node, ast.ImportFrom) and node.module == "typing"
                and any(alias.name == "NamedTuple" for alias in node.names))
            or (isinstance(node, ast.Attribute) and node.attr == "NamedTuple"
                and isinstance(node.value, ast.Name) and node.value.id == "typing")]


def test_every_record_of_the_project_is_made_by_it():
    found = {str(path.relative_to(ROOT)): lines for path in SOURCES
             if path.name != "named_tuple.py"
             and (lines := _from_typing(ast.parse(path.read_text())))}
    assert found == {}, "take NamedTuple from giter_agent.core.named_tuple"
