"""The one error tree: every error class is declared in ``core.errors``, every reason an
error carries is a member of ``Reason``, and callers branch on classes, not strings."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from giter_agent.core import errors
from giter_agent.core.errors import REASONS, GiterError, Reason

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*ROOT.joinpath("agent").rglob("*.py"), *ROOT.joinpath("tools").rglob("*.py")])


def _error_bases(tree: ast.Module) -> set[str]:
    names = {"GiterError"}
    names.update(n for n in dir(errors) if isinstance(getattr(errors, n), type)
                 and issubclass(getattr(errors, n), GiterError))
    return names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_error_classes_are_declared_in_core_errors(path):
    if path == ROOT / "agent" / "core" / "errors.py":
        return
    tree = ast.parse(path.read_text())
    bases = _error_bases(tree)
    declared = [node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
                and any(isinstance(b, ast.Name | ast.Attribute)
                        and (b.id if isinstance(b, ast.Name) else b.attr) in bases
                        for b in node.bases)]
    assert declared == [], f"declare {declared} in giter_agent/core/errors.py"


ERROR_CLASSES = {n for n in dir(errors) if isinstance(getattr(errors, n), type)
                 and issubclass(getattr(errors, n), GiterError)}


def _called(node: ast.Call) -> str:
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr \
        if isinstance(func, ast.Attribute) else ""


def _reason_literals(tree: ast.Module) -> list[tuple[int, str]]:
    """``reason="X"`` given to an error class, and ``_refuse("X", ...)``/``hub_error``."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _called(node)
        if name in ERROR_CLASSES or name.endswith("Error"):
            found.extend((kw.value.lineno, kw.value.value) for kw in node.keywords
                         if kw.arg == "reason" and isinstance(kw.value, ast.Constant))
        if name == "_refuse" and node.args and isinstance(node.args[0], ast.Constant):
            found.append((node.lineno, node.args[0].value))
        if name == "hub_error" and len(node.args) > 1 \
                and isinstance(node.args[1], ast.Constant):
            found.append((node.lineno, node.args[1].value))
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_reason_an_error_carries_is_a_member_of_reason(path):
    unknown = [(line, r) for line, r in _reason_literals(ast.parse(path.read_text()))
               if r not in REASONS]
    assert unknown == [], f"add these to core.errors.Reason: {unknown}"


def test_every_reason_is_its_own_name():
    names = [name for name in vars(Reason) if not name.startswith("_")]
    assert len(names) > 100 and {getattr(Reason, name) for name in names} == REASONS
    assert [name for name in names if getattr(Reason, name) != name] == []


def test_every_error_class_reason_is_a_member_of_reason():
    for name in errors.__all__:
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, GiterError):
            assert cls.reason in REASONS, name


def test_callers_branch_on_classes():
    # The categories callers used to tell apart by reason strings.
    assert isinstance(errors.hub_error("x", "UnknownHostKey"), errors.HubIdentityError)
    assert isinstance(errors.hub_error("x", "Offline"), errors.HubOffline)
    assert isinstance(errors.hub_error("x", "AuthFailed"), errors.HubAuthError)
    assert isinstance(errors.ConfigError("x"), errors.UsageError)
    assert isinstance(errors.StickError("x"), errors.UsageError)
    from giter_bundle.errors import UsageError
    assert issubclass(UsageError, errors.UsageError)
    assert Reason.Offline == "Offline" and f"{Reason.Fork}" == "Fork"
