"""``dependsOn``: apply order, cycles as errors (never a hang), waiting dependents, prune order.

Commands that append their name to a log file show the order things really ran in.
"""

from __future__ import annotations

from itertools import pairwise

import pytest
from gpiozero.pins.mock import MockFactory
from support.kinds import doc, make_ctx, ready, specset

from giter_agent.kinds import builtin_kinds
from giter_agent.reconcile.engine import reconcile
from giter_agent.reconcile.order import resolve_order

SH = "/bin/sh"


@pytest.fixture
def ran(tmp_path):
    return tmp_path / "ran.log"


@pytest.fixture
def ctx(tmp_path, clock, ran):
    commands = {n: (SH, "-c", f"echo {n} >> {ran}") for n in "abcdefgh"}
    c = make_ctx(tmp_path, MockFactory(), clock, commands=commands)
    yield c
    c.close()


def step(name: str, *deps: str, gen: int = 1) -> bytes:
    spec = {"command": name}
    if deps:
        spec["dependsOn"] = list(deps)
    return doc("Command", name, spec, generation=gen)


def order_of(ran) -> list[str]:
    return ran.read_text().split() if ran.exists() else []


def test_dependencies_run_first_whatever_the_file_order(ctx, ran):
    # Files in the order d, c, b, a; a depends on nothing, d on c, c on b and a.
    spec = specset(step("d", "c"), step("c", "b", "Command/a"), step("b", "a"), step("a"),
                   step("e"))
    result = reconcile(spec, ctx, builtin_kinds(), {}, "c1")
    # Each as early as its dependencies allow, ties broken by file order.
    assert order_of(ran) == ["a", "b", "c", "d", "e"]
    assert all(ready(r)[0] for r in result.records.values())


def test_a_cycle_is_an_error_on_its_members_and_the_rest_applies(ctx, ran):
    spec = specset(step("a", "b"), step("b", "c"), step("c", "a"), step("d", "a"), step("e"))
    result = reconcile(spec, ctx, builtin_kinds(), {}, "c1")
    for key, cycle in [("Command/a", "Command/a -> Command/b -> Command/c -> Command/a"),
                       ("Command/b", "Command/b -> Command/c -> Command/a -> Command/b"),
                       ("Command/c", "Command/c -> Command/a -> Command/b -> Command/c")]:
        cond = result.records[key].status["conditions"][0]
        assert (cond["status"], cond["reason"]) == ("False", "DependencyCycle")
        assert cond["message"] == f"dependsOn cycle: {cycle}"
    assert ready(result.records["Command/d"]) == (False, "DependencyNotReady")
    assert order_of(ran) == ["e"]  # nothing on or behind the cycle ran


def test_self_dependency_is_a_cycle(ctx):
    result = reconcile(specset(step("a", "a")), ctx, builtin_kinds(), {}, "c1")
    cond = result.records["Command/a"].status["conditions"][0]
    assert cond["message"] == "dependsOn cycle: Command/a -> Command/a"


def test_a_dependent_waits_then_runs_in_the_pass_its_dependency_gets_ready(ctx, clock, ran,
                                                                            tmp_path):
    blocker = tmp_path / "root" / "conf"
    blocker.mkdir()  # a folder where the file should go: the write fails and retries
    spec = specset(doc("File", "conf", {"path": str(blocker), "content": "x"}),
                   step("a", "File/conf"))
    kinds = builtin_kinds()
    first = reconcile(spec, ctx, kinds, {}, "c1")
    assert ready(first.records["File/conf"]) == (False, "WriteFailed")
    waiting = first.records["Command/a"].status
    assert waiting["conditions"][0]["reason"] == "DependencyNotReady"
    assert waiting["conditions"][0]["message"] == "waiting for File/conf to be Ready"
    assert "retryAfterSeconds" not in waiting and first.records["Command/a"].backoff is None
    assert not ran.exists()
    blocker.rmdir()
    clock.advance(30)
    second = reconcile(spec, ctx, kinds, first.records, "c1")
    assert ready(second.records["File/conf"]) == (True, "Applied")
    assert ready(second.records["Command/a"]) == (True, "Succeeded")
    assert order_of(ran) == ["a"]


def test_bare_names_must_be_unambiguous(ctx, tmp_path):
    spec = specset(doc("File", "motd", {"path": str(tmp_path / "root" / "m"), "content": "x"}),
                   doc("Output", "motd", {"pin": "led1", "state": "on"}),
                   step("a", "motd"), step("b", "Output/motd"))
    result = reconcile(spec, ctx, builtin_kinds(), {}, "c1")
    assert ready(result.records["Command/a"]) == (False, "AmbiguousDependency")
    assert ready(result.records["Command/b"]) == (True, "Succeeded")


def test_a_dependency_on_an_invalid_resource_waits(ctx):
    from giter_agent.spec.resources import select

    spec = select([("devices/d/bad.yaml", doc("Command", "bad", {"command": 7})),
                   ("devices/d/a.yaml", step("a", "Command/bad"))])
    result = reconcile(spec, ctx, builtin_kinds(), {}, "c1")
    assert ready(result.records["Command/a"]) == (False, "DependencyNotReady")


def test_prune_undoes_dependents_first(ctx, tmp_path):
    root = tmp_path / "root"
    spec = specset(doc("File", "base", {"path": str(root / "base"), "content": "x"}),
                   doc("File", "mid", {"path": str(root / "mid"), "content": "x",
                                       "dependsOn": ["base"]}),
                   doc("File", "top", {"path": str(root / "top"), "content": "x",
                                       "dependsOn": ["mid"]}))
    first = reconcile(spec, ctx, builtin_kinds(), {}, "c1")
    gone = reconcile(specset(), ctx, builtin_kinds(), first.records, "c2")
    assert gone.pruned == ["File/top", "File/mid", "File/base"]
    assert not any(root.iterdir())


def test_resolve_order_is_linear_on_a_long_chain():
    """A 2000-long chain orders (and a 2000-long cycle is found) without recursion."""
    n = 2000
    items = [(f"File/n{i}", f"n{i}", (f"n{i + 1}",) if i + 1 < n else ()) for i in range(n)]
    order = resolve_order(items)
    assert order.keys[0] == f"File/n{n - 1}" and order.keys[-1] == "File/n0"
    cyclic = [*items[:-1], (f"File/n{n - 1}", f"n{n - 1}", ("n0",))]
    looped = resolve_order(cyclic)
    assert len(looped.cycles) == n


def test_every_member_of_tangled_cycles_gets_a_true_cycle():
    # Two loops sharing b (a<->b, b<->c) plus d hanging off them, in several orders.
    edges = {"a": ("b",), "b": ("c", "a"), "c": ("b",), "d": ("a",)}
    for names in (["a", "b", "c", "d"], ["d", "c", "b", "a"], ["b", "d", "a", "c"]):
        order = resolve_order([(f"X/{n}", n, edges[n]) for n in names])
        assert set(order.cycles) == {"X/a", "X/b", "X/c"}  # d is behind a cycle, not on one
        for key, text in order.cycles.items():
            path = [p.split("/")[1] for p in text.split(" -> ")]
            assert path[0] == path[-1] == key.split("/")[1]
            assert all(b in edges[a] for a, b in pairwise(path)), text
