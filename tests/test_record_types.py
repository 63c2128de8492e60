"""The records a sync makes at start-up are NamedTuples, and none can share a mutable default.

Creating a dataclass costs Python 3.11 a compile per generated method, at every start of
a one-shot sync or a pass worker; the immutable records are therefore NamedTuples
(docs/decisions.md, "Records read on every start are NamedTuples"). A NamedTuple's
default is one object shared by every record made without that field, and unlike a
dataclass it does not refuse a list, dict or set there: every NamedTuple class of the
agent and the publisher is read from source here, and each default must be a literal
of immutable values: a constant, a tuple of them, another such record made from them
(``Limits()``), or a read-only mapping of them (``MappingProxyType({})``). The kinds'
outcomes are NamedTuples too, so a kind tells "a tuple of results, or an outcome" apart
with ``is_outcome``, never with ``isinstance(x, tuple)``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from giter_agent.config.agent_toml import Config
from giter_agent.daemon.jobs import Job
from giter_agent.daemon.worker_protocol import Outcome, Request
from giter_agent.device.board import Board
from giter_agent.device.outputs import Held
from giter_agent.history.artifacts import ArtifactInfo, Listing
from giter_agent.history.bundle import BundleHeader
from giter_agent.history.chain_export import Chain
from giter_agent.kinds.base import Condition, Context, Done, Failed, Retry, is_outcome
from giter_agent.kinds.command import RunResult
from giter_agent.kinds.debian import PackageTools
from giter_agent.kinds.fields import Field
from giter_agent.kinds.health_check import CheckResult
from giter_agent.reconcile.engine import PassResult
from giter_agent.spec.enrolment import DeviceRecord
from giter_agent.spec.placeholders import Scope
from giter_agent.spec.resources import Resource
from giter_agent.state.health import Health
from giter_agent.state.records import NetworkRecord, ResourceRecord
from giter_agent.state.recovery import Recovered
from giter_agent.state.store import State
from giter_agent.status.report import BundleVerdict, SyncReport
from giter_agent.trust.gate import GateVerdict
from giter_agent.trust.spec_rule import Verified
from giter_agent.trust.sshsig import PublicKey

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
SOURCES = (ROOT / "agent", ROOT / "tools" / "bundle")


def _is_namedtuple(node: ast.ClassDef) -> bool:
    return any((isinstance(b, ast.Name) and b.id == "NamedTuple")
               or (isinstance(b, ast.Attribute) and b.attr == "NamedTuple")
               for b in node.bases)


def _immutable_literal(node: ast.expr, records: frozenset[str] = frozenset()) -> bool:
    """None, a number, a string or bytes, a tuple of such, arithmetic on numbers, one of
    ``records`` (NamedTuple classes, whose own defaults are checked here too) made from
    such, or a read-only ``MappingProxyType`` over a dict literal of such (no one else
    holds that dict, so no one can change it)."""
    def ok(n: ast.expr) -> bool:
        return _immutable_literal(n, records)

    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Tuple):
        return all(ok(e) for e in node.elts)
    if isinstance(node, ast.UnaryOp):
        return ok(node.operand)
    if isinstance(node, ast.BinOp):
        return ok(node.left) and ok(node.right)
    if isinstance(node, ast.Call):
        name = ast.unparse(node.func)
        args = [*node.args, *(k.value for k in node.keywords)]
        if name in records:
            return all(k.arg is not None for k in node.keywords) and all(map(ok, args))
        if name in ("MappingProxyType", "types.MappingProxyType"):
            return (len(node.args) == 1 and not node.keywords
                    and isinstance(node.args[0], ast.Dict)
                    and all(k is not None and ok(k) for k in node.args[0].keys)
                    and all(ok(v) for v in node.args[0].values))
    return False  # a list, dict, set, another call or a name: possibly shared and mutable


def _classes() -> list[tuple[Path, ast.ClassDef]]:
    return [(path, node) for folder in SOURCES for path in sorted(folder.rglob("*.py"))
            for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, ast.ClassDef)]


def record_names() -> frozenset[str]:
    """Names of the NamedTuple classes that no other class of the sources shares."""
    classes = _classes()
    others = {node.name for _, node in classes if not _is_namedtuple(node)}
    return frozenset(node.name for _, node in classes
                     if _is_namedtuple(node) and node.name not in others)


def namedtuple_defaults() -> dict[str, list[tuple[str, ast.expr]]]:
    """``path:Class`` -> (field, default) of every NamedTuple class in the sources."""
    return {f"{path.relative_to(ROOT)}:{node.name}": [
        (item.target.id, item.value) for item in node.body
        if isinstance(item, ast.AnnAssign) and item.value is not None
        and isinstance(item.target, ast.Name)]
        for path, node in _classes() if _is_namedtuple(node)}


def test_records_are_namedtuples_whose_defaults_cannot_be_shared_mutables():
    # The check itself: what could be one shared mutable object is refused.
    records = frozenset({"Limits"})
    refused = ["[]", "{}", "{1}", "dict()", "Limits()", "DEFAULTS", "([],)", "Other()",
               "Limits([])", "Limits(**KW)", "MappingProxyType(SHARED)",
               "MappingProxyType({'a': []})", "types.MappingProxyType(dict())"]
    allowed = ["None", "0", "-1.5", "'wait'", "b''", "()", "('a', 'b')", "512 * 2**20"]
    made = ["Limits()", "Limits(1, max_objects=2)", "MappingProxyType({})",
            "types.MappingProxyType({'a': ('b',)})"]
    assert [t for t in refused[:5] if _immutable_literal(ast.parse(t, mode="eval").body)] \
        == []  # without the record names, a call is never allowed
    assert [t for t in refused[5:] if _immutable_literal(ast.parse(t, mode="eval").body,
                                                         records)] == []
    assert [t for t in allowed + made
            if not _immutable_literal(ast.parse(t, mode="eval").body, records)] == []

    for record in (Resource, NetworkRecord, GateVerdict, PublicKey, Config, Board, Field,
                   BundleHeader, DeviceRecord, Scope, Verified, BundleVerdict, Request, Job,
                   Health, RunResult, CheckResult, PackageTools, ArtifactInfo, Listing):
        assert issubclass(record, tuple) and hasattr(record, "_fields"), record
    found, names = namedtuple_defaults(), record_names()
    assert {"agent/spec/resources.py:Resource", "agent/history/store.py:Caps",
            "agent/config/settings.py:SettingsConfig"} <= set(found)  # the scan sees them
    assert {"Limits", "Services", "SettingsConfig"} <= names
    assert any(fields for fields in found.values())  # and reads their defaults
    shared = [f"{where}.{name} = {ast.unparse(value)}" for where, fields in found.items()
              for name, value in fields if not _immutable_literal(value, names)]
    assert shared == []


def test_an_outcome_is_never_taken_for_a_kind_s_own_results():
    # A kind's helper returns "a tuple of results, or an outcome" (File's (uid, gid), a
    # Release's prepared paths). The outcomes are NamedTuples, so tuples too: the one
    # test that tells them apart is is_outcome, asked first.
    outcomes = (Done("Applied", "ok"), Retry("UnknownOwner", "no user", 300),
                Failed("RequiresRoot", "not root"))
    assert all(isinstance(o, tuple) and is_outcome(o) for o in outcomes)
    results = ((1000, 1000), (None, None), (), ("a",), Condition("T", True, "r", "m"))
    assert not any(is_outcome(r) for r in results)
    # And no kind tells them apart by asking for a tuple (every outcome would pass).
    asks = []
    for path in sorted((ROOT / "agent" / "kinds").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "isinstance" \
                    and len(node.args) == 2 and "tuple" in ast.unparse(node.args[1]):
                asks.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert asks == []


def test_the_mutable_records_of_a_sync_are_slotted_plain_classes():
    # Not dataclasses (their creation is paid at every start), and with ``__slots__``:
    # an attribute set by a typo raises instead of quietly adding a field. Defaults are
    # None for a fresh list or dict, never one shared object (ruff's B006/B008 refuse a
    # mutable default argument anywhere).
    for cls in (ResourceRecord, Context, State, SyncReport, PassResult, Recovered, Held,
                Outcome, Chain):
        assert "__slots__" in vars(cls) and "__dataclass_fields__" not in vars(cls), cls
    ctx = Context(board=Board("mock", "mock", {}), files_roots=(),
                  pin_factory_maker=lambda board: None)
    with pytest.raises(AttributeError):
        ctx.sysfss = None  # type: ignore[attr-defined]
    assert State().resources is not State().resources  # each gets its own
    assert Outcome().plan is not Outcome().plan and Chain().commits is not Chain().commits
    assert ResourceRecord("File", "a", "p").status is not ResourceRecord("File", "b", "p").status
