"""The reconcile pass and the File and Output kinds, on gpiozero's mock pins and a temp root."""

from __future__ import annotations

import json
import time

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin
from support.resources import API

from giter_agent.device.board import load_board
from giter_agent.device.outputs import HeldOutputs
from giter_agent.kinds import builtin_kinds
from giter_agent.kinds.base import Context
from giter_agent.reconcile.engine import reconcile
from giter_agent.spec.resources import SpecSet, parse_resource, select


def file_doc(name: str, path: str, content: str = "hello\n", extra: str = "",
             generation: int | None = 1) -> bytes:
    gen = f"  generation: {generation}\n" if generation is not None else ""
    return (f"{API}kind: File\nmetadata:\n  name: {name}\n{gen}spec:\n  path: {path}\n"
            f"  content: {json.dumps(content)}\n{extra}").encode()


def output_doc(name: str, pin: str, state: str, extra: str = "") -> bytes:
    return (f"{API}kind: Output\nmetadata:\n  name: {name}\n  generation: 1\nspec:\n"
            f"  pin: {pin}\n  state: {state}\n{extra}").encode()


@pytest.fixture
def factory():
    f = MockFactory(pin_class=MockPWMPin)
    yield f
    f.close()


@pytest.fixture
def ctx(tmp_path, factory):
    root = tmp_path / "root"
    root.mkdir()
    c = Context(board=load_board("generic-mock"), files_roots=(root,),
                pin_factory_maker=lambda board: factory, clock=lambda: 1_800_000_000.0)
    c.outputs = HeldOutputs(lambda: c.pin_factory)
    yield c
    c.close()


def specset(*files: tuple[str, bytes]) -> SpecSet:
    return select(list(files))


def ready(result, key):
    cond = result.records[key].status["conditions"][0]
    return cond["status"] == "True", cond["reason"]


def test_file_written_atomically_with_mode_then_up_to_date(ctx, tmp_path):
    target = tmp_path / "root" / "etc" / "motd"
    spec = specset(("devices/d/motd.yaml",
                    file_doc("motd", str(target), extra='  mode: "0640"\n')))
    kinds = builtin_kinds()
    first = reconcile(spec, ctx, kinds, {}, "c1")
    assert ready(first, "File/motd") == (True, "Applied")
    assert target.read_text() == "hello\n"
    assert target.stat().st_mode & 0o777 == 0o640
    status = first.records["File/motd"].status
    assert status["observedGeneration"] == 1 and status["specCommit"] == "c1"
    assert len(status["observed"]["sha256"]) == 64
    again = reconcile(spec, ctx, kinds, first.records, "c1")
    assert ready(again, "File/motd") == (True, "Applied")
    # A hand edit is drift: the next pass puts the spec back.
    target.write_text("edited by hand\n")
    fixed = reconcile(spec, ctx, kinds, again.records, "c1")
    assert ready(fixed, "File/motd") == (True, "Applied")
    assert target.read_text() == "hello\n"
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("path, reason", [
    ("/etc/passwd", "PathNotAllowed"),
    ("{root}/../escape", "InvalidSpec"),
    ("relative/path", "InvalidSpec"),
    ("{link}/x", "PathNotAllowed"),
])
def test_file_outside_roots_is_refused(ctx, tmp_path, path, reason):
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    path = path.format(root=tmp_path / "root", link=tmp_path / "root" / "link")
    result = reconcile(specset(("devices/d/f.yaml", file_doc("f", path))),
                       ctx, builtin_kinds(), {}, "c1")
    assert ready(result, "File/f") == (False, reason)
    assert "observedGeneration" not in result.records["File/f"].status
    assert not (tmp_path / "x").exists() and not (tmp_path / "escape").exists()


def test_file_mode_and_content_schema(ctx, tmp_path):
    target = tmp_path / "root" / "f"
    docs = [
        ("devices/d/a.yaml", file_doc("a", str(target), extra='  mode: "4755"\n')),
        ("devices/d/b.yaml", file_doc("b", str(target), extra="  mode: 644\n")),
        ("devices/d/c.yaml", file_doc("c", str(target), extra="  colour: red\n")),
        ("devices/d/e.yaml", file_doc("e", str(target), extra="  contentBase64: aGk=\n")),
    ]
    result = reconcile(specset(*docs), ctx, builtin_kinds(), {}, "c1")
    for key in ("File/a", "File/b", "File/c", "File/e"):
        assert ready(result, key) == (False, "InvalidSpec"), key
    assert not target.exists()


def test_output_on_off_and_blink_on_mock_pins(ctx, factory):
    kinds = builtin_kinds()
    pin = factory.pin("GPIO17")
    on = reconcile(specset(("devices/d/l.yaml", output_doc("l", "led1", "on"))),
                   ctx, kinds, {}, "c1")
    assert ready(on, "Output/l") == (True, "Set")
    assert pin.state == 1
    off = reconcile(specset(("devices/d/l.yaml", output_doc("l", "led1", "off"))),
                    ctx, kinds, on.records, "c2")
    assert ready(off, "Output/l") == (True, "Set") and pin.state == 0
    pin.clear_states()
    blink = reconcile(specset(("devices/d/l.yaml", output_doc(
        "l", "led1", "blink", "  onTime: 0.05\n  offTime: 0.05\n"))), ctx, kinds, off.records, "c3")
    assert ready(blink, "Output/l") == (True, "Blinking")
    time.sleep(0.3)
    values = [s.state for s in pin.states]
    assert values.count(1) >= 2 and values.count(0) >= 2  # it really toggles


def test_output_bad_pins(ctx):
    docs = [("devices/d/a.yaml", output_doc("a", "nope", "on")),
            ("devices/d/b.yaml", output_doc("b", "status-led", "on")),
            ("devices/d/c.yaml", output_doc("c", "led1", "dim"))]
    result = reconcile(specset(*docs), ctx, builtin_kinds(), {}, "c1")
    assert ready(result, "Output/a") == (False, "PinUnknown")
    assert ready(result, "Output/b") == (False, "PinReserved")
    assert ready(result, "Output/c") == (False, "InvalidSpec")


def test_prune_undoes_removed_resources_unless_kept(ctx, factory, tmp_path):
    kinds = builtin_kinds()
    gone = tmp_path / "root" / "gone"
    kept = tmp_path / "root" / "kept"
    first = reconcile(specset(
        ("devices/d/gone.yaml", file_doc("gone", str(gone))),
        ("devices/d/kept.yaml", file_doc("kept", str(kept), extra="  prune: false\n")),
        ("devices/d/l.yaml", output_doc("l", "led1", "on")),
    ), ctx, kinds, {}, "c1")
    assert gone.exists() and kept.exists() and factory.pin("GPIO17").state == 1
    second = reconcile(SpecSet(), ctx, kinds, first.records, "c2")
    assert sorted(second.pruned) == ["File/gone", "Output/l"]
    assert not gone.exists() and kept.exists()
    assert factory.pin("GPIO17").state == 0


def test_bad_resource_fails_alone_and_last_good_spec_stays(ctx, tmp_path):
    kinds = builtin_kinds()
    target = tmp_path / "root" / "motd"
    good = specset(("devices/d/motd.yaml", file_doc("motd", str(target))),
                   ("devices/d/other.yaml", file_doc("other", str(tmp_path / "root" / "o"))))
    first = reconcile(good, ctx, kinds, {}, "c1")
    broken = specset(("devices/d/motd.yaml", b"apiVersion: [\n"),
                     ("devices/d/other.yaml", file_doc("other", str(tmp_path / "root" / "o"))),
                     ("devices/d/x.yaml", API.encode() + b"kind: Teapot\nmetadata: {name: x}\n"
                      b"spec: {}\n"))
    second = reconcile(broken, ctx, kinds, first.records, "c2")
    assert target.read_text() == "hello\n"  # not pruned: the last good spec stays
    bad = second.records["file/devices/d/motd.yaml"]
    assert bad.status["conditions"][0]["reason"] == "InvalidYAML"
    assert "stays applied" in bad.status["conditions"][0]["message"]
    assert ready(second, "File/other") == (True, "Applied")
    assert ready(second, "Teapot/x") == (False, "UnknownKind")
    assert "File/motd" not in second.pruned


def test_condition_transition_time_moves_only_on_flip(ctx, tmp_path):
    kinds = builtin_kinds()
    times = iter([100.0, 200.0, 300.0])
    target = tmp_path / "root" / "t"
    spec = specset(("devices/d/t.yaml", file_doc("t", str(target))))
    r1 = reconcile(spec, ctx, kinds, {}, "c1", clock=lambda: next(times))
    r2 = reconcile(spec, ctx, kinds, r1.records, "c1", clock=lambda: next(times))
    t1 = r1.records["File/t"].status["conditions"][0]["lastTransitionTime"]
    t2 = r2.records["File/t"].status["conditions"][0]["lastTransitionTime"]
    assert t1 == t2 == "1970-01-01T00:01:40Z"
    flipped = reconcile(specset(("devices/d/t.yaml", file_doc("t", "/elsewhere"))), ctx, kinds,
                        r2.records, "c2", clock=lambda: next(times))
    cond = flipped.records["File/t"].status["conditions"][0]
    assert (cond["status"], cond["lastTransitionTime"]) == ("False", "1970-01-01T00:05:00Z")


def test_generation_absent_means_no_observed_generation(ctx, tmp_path):
    res = parse_resource("devices/d/g.yaml", file_doc("g", str(tmp_path / "root" / "g"),
                                                      generation=None))
    result = reconcile(SpecSet(resources=[res]), ctx, builtin_kinds(), {}, "c9")
    status = result.records["File/g"].status
    assert "observedGeneration" not in status and status["specCommit"] == "c9"


def test_retry_requests_a_wakeup(ctx, tmp_path):
    (tmp_path / "root" / "ro").mkdir(mode=0o500)
    spec = specset(("devices/d/r.yaml", file_doc("r", str(tmp_path / "root" / "ro" / "x"))))
    # root ignores directory permissions; a file where a folder should be fails for anyone
    (tmp_path / "root" / "ro" / "x").mkdir()
    result = reconcile(spec, ctx, builtin_kinds(), {}, "c1")
    assert ready(result, "File/r") == (False, "WriteFailed")
    assert ctx.next_wakeup() == 1_800_000_000.0 + 30
    reconcile(SpecSet(), ctx, builtin_kinds(), result.records, "c2")
    assert ctx.next_wakeup() is None
