"""Table-driven reconcile passes: each row is a spec, and the conditions and
observedGeneration every resource must end with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin
from support.kinds import API, Clock, doc, make_ctx, specset

from giter_agent.kinds import builtin_kinds
from giter_agent.reconcile.engine import reconcile

ROOT = "{root}"  # replaced by the test's files root


@dataclass
class Row:
    name: str
    docs: list[bytes]
    # key -> {"Ready": (status, reason), other condition types..., "gen": int | None}
    want: dict[str, dict]
    before: list[bytes] = field(default_factory=list)  # a first pass, e.g. generation 1
    prepare: str | None = None  # a file to create under the root beforehand


def f(name: str, path: str = "", gen: int | None = 1, **extra) -> bytes:
    return doc("File", name, {"path": path or f"{ROOT}/{name}", "content": "x\n", **extra},
               generation=gen)


def o(name: str, pin: str = "led1", gen: int | None = 1, **extra) -> bytes:
    return doc("Output", name, {"pin": pin, "state": "on", **extra}, generation=gen)


def c(name: str, command: str = "ok", gen: int | None = 1, **extra) -> bytes:
    return doc("Command", name, {"command": command, **extra}, generation=gen)


def cpu(name: str, above: float, gen: int | None = 1) -> bytes:
    return doc("Sensor", name, {"source": "cpu-temperature", "thresholds": {"above": above}},
               generation=gen)


ROWS = [
    Row("file applied", [f("a", gen=3)], {"File/a": {"Ready": ("True", "Applied"), "gen": 3}}),
    Row("no generation, no observedGeneration", [f("a", gen=None)],
        {"File/a": {"Ready": ("True", "Applied"), "gen": None}}),
    Row("outside the roots", [f("a", "/etc/x", gen=2)],
        {"File/a": {"Ready": ("False", "PathNotAllowed"), "gen": None}}),
    Row("unknown kind", [doc("Teapot", "t", {})],
        {"Teapot/t": {"Ready": ("False", "UnknownKind"), "gen": None}}),
    Row("schema error", [f("a", mode="rwx")],
        {"File/a": {"Ready": ("False", "InvalidSpec"), "gen": None}}),
    Row("output set", [o("l", gen=5)], {"Output/l": {"Ready": ("True", "Set"), "gen": 5}}),
    Row("status LED is reserved", [o("l", pin="status-led")],
        {"Output/l": {"Ready": ("False", "PinReserved"), "gen": None}}),
    Row("sensor above its threshold is still Ready", [cpu("t", above=40)],
        {"Sensor/t": {"Ready": ("True", "Sampling"),
                      "AboveThreshold": ("True", "ValueAboveThreshold"), "gen": 1}}),
    Row("sensor below its threshold", [cpu("t", above=60)],
        {"Sensor/t": {"Ready": ("True", "Sampling"),
                      "AboveThreshold": ("False", "ValueWithinThreshold"), "gen": 1}}),
    Row("observe-only, device differs", [f("a", reconcile="observe-only")],
        {"File/a": {"Ready": ("False", "DriftDetected"), "Drifted": ("True", "DriftDetected"),
                    "gen": None}}),
    Row("observe-only, device matches", [f("a", reconcile="observe-only")],
        {"File/a": {"Ready": ("True", "InSync"), "Drifted": ("False", "NoDrift"), "gen": 1}},
        prepare="a"),
    Row("command ran", [c("r")], {"Command/r": {"Ready": ("True", "Succeeded"), "gen": 1}}),
    Row("command failed", [c("r", "fails")],
        {"Command/r": {"Ready": ("False", "CommandFailed"), "gen": None}}),
    Row("command not allowed", [c("r", "format-disk")],
        {"Command/r": {"Ready": ("False", "CommandNotAllowed"), "gen": None}}),
    Row("dependency not Ready", [f("bad", "/etc/bad"), f("a", dependsOn=["bad"])],
        {"File/bad": {"Ready": ("False", "PathNotAllowed"), "gen": None},
         "File/a": {"Ready": ("False", "DependencyNotReady"), "gen": None}}),
    Row("dependency Ready first", [f("a", dependsOn=["File/b"]), f("b")],
        {"File/a": {"Ready": ("True", "Applied"), "gen": 1},
         "File/b": {"Ready": ("True", "Applied"), "gen": 1}}),
    Row("dependency missing", [f("a", dependsOn=["ghost"])],
        {"File/a": {"Ready": ("False", "DependencyNotFound"), "gen": None}}),
    Row("dependency cycle", [f("a", dependsOn=["b"]), f("b", dependsOn=["a"]), f("c")],
        {"File/a": {"Ready": ("False", "DependencyCycle"), "gen": None},
         "File/b": {"Ready": ("False", "DependencyCycle"), "gen": None},
         "File/c": {"Ready": ("True", "Applied"), "gen": 1}}),
    Row("dependsOn must be a list", [f("a", dependsOn="b")],
        {"File/a": {"Ready": ("False", "InvalidSpec"), "gen": None}}),
    Row("agent settings", [doc("Agent", "agent", {"reportInterval": 600})],
        {"Agent/agent": {"Ready": ("True", "Applied"), "gen": 1}}),
    Row("a failing new generation keeps the old observedGeneration",
        [f("a", "/etc/a", gen=2)], {"File/a": {"Ready": ("False", "PathNotAllowed"), "gen": 1}},
        before=[f("a", gen=1)]),
    Row("a new generation that finishes moves it", [f("a", gen=2, mode="0600")],
        {"File/a": {"Ready": ("True", "Applied"), "gen": 2}}, before=[f("a", gen=1)]),
]


@pytest.fixture
def factory():
    fac = MockFactory(pin_class=MockPWMPin)
    yield fac
    fac.close()


def fill(data: bytes, root: Path) -> bytes:
    return data.replace(ROOT.encode(), str(root).encode())


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_reconcile_table(row: Row, tmp_path, factory):
    ctx = make_ctx(tmp_path, factory, Clock(),
                   commands={"ok": ("/bin/true",), "fails": ("/bin/false",)})
    root = tmp_path / "root"
    zone = ctx.sysfs / "class" / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "temp").write_text("50000\n")
    if row.prepare:
        (root / row.prepare).write_text("x\n")
        (root / row.prepare).chmod(0o644)
    kinds = builtin_kinds()
    previous: dict = {}
    try:
        if row.before:
            previous = reconcile(specset(*(fill(d, root) for d in row.before)), ctx, kinds, {},
                                 "c0").records
        result = reconcile(specset(*(fill(d, root) for d in row.docs)), ctx, kinds, previous,
                           "c1")
    finally:
        ctx.close()
    assert set(result.records) == set(row.want)
    for key, want in row.want.items():
        status = result.records[key].status
        got = {cond["type"]: (cond["status"], cond["reason"]) for cond in status["conditions"]}
        assert status["conditions"][0]["type"] == "Ready"  # Ready always comes first
        for ctype, expected in want.items():
            if ctype != "gen":
                assert got.get(ctype) == expected, (key, ctype, status)
        assert set(got) == {t for t in want if t != "gen"}, (key, status)
        assert status.get("observedGeneration") == want["gen"], (key, status)
        assert status["specCommit"] == "c1"


def test_spec_branch_status_is_a_warning_in_the_message(tmp_path, factory):
    ctx = make_ctx(tmp_path, factory)
    data = (f"{API}kind: Output\nmetadata: {{name: l}}\nspec: {{pin: led1, state: on}}\n"
            "status: {fake: true}\n").encode()
    result = reconcile(specset(data), ctx, builtin_kinds(), {}, "c1")
    message = result.records["Output/l"].status["conditions"][0]["message"]
    assert message.endswith("status on the spec branch is ignored (status is written by the "
                            "device)")
    ctx.close()
