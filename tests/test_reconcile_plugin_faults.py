"""A plug-in kind's bug fails its own resource, in a pass and in a plan alike.

A plug-in's ``validate`` or ``prune`` that raises something other than ``ResourceError``
once aborted the whole pass (the state was never saved, so every later pass failed the
same way), and ``giter-agent plan`` crashed where ``reconcile`` contained the error.
Both now evaluate a resource through ``reconcile.engine.check`` and ``leaving_resources``.
"""

from __future__ import annotations

from typing import Any

from gpiozero.pins.mock import MockFactory
from support.kinds import doc, make_ctx, ready, specset

from giter_agent.kinds import builtin_kinds
from giter_agent.kinds.base import Context, Done, Kind, Outcome
from giter_agent.reconcile.engine import reconcile
from giter_agent.reconcile.plan import plan


class Brittle(Kind):
    """A plug-in with bugs: ``validate`` raises KeyError on a spec without ``level``,
    ``prune`` raises RuntimeError."""

    kind = "Brittle"
    ACTS = True

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        return {"level": spec["level"]}  # KeyError: the plug-in forgot to check

    def apply(self, key: str, spec: dict[str, Any], ctx: Context) -> Outcome:
        return Done("Set", f"level {spec['level']}")

    def plan(self, key: str, spec: dict[str, Any], ctx: Context) -> str | None:
        return None

    def prune(self, key: str, spec: dict[str, Any], ctx: Context) -> None:
        raise RuntimeError("the plug-in cannot undo itself")


def kinds() -> dict[str, Kind]:
    return {**builtin_kinds(), "Brittle": Brittle()}


def test_a_validate_bug_fails_its_resource_alone_in_pass_and_plan(tmp_path):
    ctx = make_ctx(tmp_path, MockFactory())
    spec = specset(doc("Brittle", "b", {"colour": "red"}),
                   doc("File", "motd", {"path": str(tmp_path / "root" / "motd"),
                                        "content": "hi\n"}))
    result = reconcile(spec, ctx, kinds(), {}, "c1")
    assert ready(result.records["Brittle/b"]) == (False, "HandlerError")
    assert ready(result.records["File/motd"]) == (True, "Applied")
    steps = {s.key: (s.action, s.detail) for s in plan(spec, ctx, kinds(), result.records)}
    assert steps["Brittle/b"][0] == "invalid" and "HandlerError" in steps["Brittle/b"][1]
    assert steps["File/motd"][0] == "none"
    ctx.close()


def test_a_prune_bug_fails_its_resource_alone_and_is_retried(tmp_path):
    ctx = make_ctx(tmp_path, MockFactory())
    motd = doc("File", "motd", {"path": str(tmp_path / "root" / "motd"), "content": "hi\n"})
    first = reconcile(specset(doc("Brittle", "b", {"level": 3}), motd), ctx, kinds(), {}, "c1")
    assert ready(first.records["Brittle/b"]) == (True, "Set")

    # The Brittle resource leaves the spec: its prune raises. The pass still completes,
    # the File is still applied, and the failure is reported, not swallowed.
    second = reconcile(specset(motd), ctx, kinds(), first.records, "c2")
    assert ready(second.records["File/motd"]) == (True, "Applied")
    assert ready(second.records["Brittle/b"]) == (False, "PruneFailed")
    assert "Brittle/b" not in second.pruned
    steps = {s.key: s.action for s in plan(specset(motd), ctx, kinds(), second.records)}
    assert steps["Brittle/b"] == "prune"  # the next pass tries again

    third = reconcile(specset(motd), ctx, kinds(), second.records, "c3")
    assert ready(third.records["Brittle/b"]) == (False, "PruneFailed")
    ctx.close()
