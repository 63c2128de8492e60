"""The records a sync makes at start-up are NamedTuples, and none can share a mutable default.

Creating a dataclass costs Python 3.11 a compile per generated method, at every start of
a one-shot sync or a pass worker; the immutable records are therefore NamedTuples
(docs/decisions.md, "Records read on every start are NamedTuples"). A NamedTuple's
default is one object shared by every record made without that field, and unlike a
dataclass it does not refuse a list, dict or set there: every NamedTuple class of the
agent and the publisher is read from source here, and each default must be a literal
of immutable values. The kinds' outcomes stay classes that are not tuples: kinds tell a
tuple of results from an outcome with ``isinstance(x, tuple)``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from giter_agent.kinds.base import Done, Failed, Retry
from giter_agent.spec.resources import Resource
from giter_agent.state.records import NetworkRecord
from giter_agent.trust.gate import GateVerdict
from giter_agent.trust.sshsig import PublicKey

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
SOURCES = (ROOT / "agent", ROOT / "tools" / "bundle")


def _is_namedtuple(node: ast.ClassDef) -> bool:
    return any((isinstance(b, ast.Name) and b.id == "NamedTuple")
               or (isinstance(b, ast.Attribute) and b.attr == "NamedTuple")
               for b in node.bases)


def _immutable_literal(node: ast.expr) -> bool:
    """None, a number, a string or bytes, a tuple of such, or arithmetic on numbers."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Tuple):
        return all(_immutable_literal(e) for e in node.elts)
    if isinstance(node, ast.UnaryOp):
        return _immutable_literal(node.operand)
    if isinstance(node, ast.BinOp):
        return _immutable_literal(node.left) and _immutable_literal(node.right)
    return False  # a list, dict, set, a call or a name: possibly shared and mutable


def namedtuple_defaults() -> dict[str, list[tuple[str, ast.expr]]]:
    """``path:Class`` -> (field, default) of every NamedTuple class in the sources."""
    out: dict[str, list[tuple[str, ast.expr]]] = {}
    for folder in SOURCES:
        for path in sorted(folder.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ClassDef) and _is_namedtuple(node):
                    out[f"{path.relative_to(ROOT)}:{node.name}"] = [
                        (item.target.id, item.value) for item in node.body
                        if isinstance(item, ast.AnnAssign) and item.value is not None
                        and isinstance(item.target, ast.Name)]
    return out


def test_records_are_namedtuples_whose_defaults_cannot_be_shared_mutables():
    # The check itself: what could be one shared mutable object is refused.
    refused = ["[]", "{}", "{1}", "dict()", "Limits()", "DEFAULTS", "([],)"]
    allowed = ["None", "0", "-1.5", "'wait'", "b''", "()", "('a', 'b')", "512 * 2**20"]
    assert [t for t in refused if _immutable_literal(ast.parse(t, mode="eval").body)] == []
    assert [t for t in allowed if not _immutable_literal(ast.parse(t, mode="eval").body)] == []

    for record in (Resource, NetworkRecord, GateVerdict, PublicKey):
        assert issubclass(record, tuple) and hasattr(record, "_fields"), record
    found = namedtuple_defaults()
    assert {"agent/spec/resources.py:Resource", "agent/history/store.py:Caps",
            "agent/config/settings.py:SettingsConfig"} <= set(found)  # the scan sees them
    assert any(fields for fields in found.values())  # and reads their defaults
    shared = [f"{where}.{name} = {ast.unparse(value)}" for where, fields in found.items()
              for name, value in fields if not _immutable_literal(value)]
    assert shared == []
    # A kind returns "a tuple of results, or an outcome"; an outcome must never be a tuple.
    for outcome in (Done, Retry, Failed):
        assert not issubclass(outcome, tuple), outcome
