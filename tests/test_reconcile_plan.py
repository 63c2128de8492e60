"""``giter-agent plan``: what each resource would change, with nothing changed - not the
files, not the state directory, not a pin - even while another process holds the lock."""

from __future__ import annotations

import hashlib
import json

import pytest
from gpiozero.pins.mock import MockFactory
from support.kinds import Rig, doc, make_ctx, specset

from giter_agent.kinds import builtin_kinds
from giter_agent.reconcile.engine import reconcile
from giter_agent.reconcile.plan import plan
from giter_agent.state.store import state_lock


def tree_digest(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_plan_lists_changes_prunes_and_keeps(tmp_path):
    ctx = make_ctx(tmp_path, MockFactory(), commands={"restart": ("/bin/true",)})
    root = tmp_path / "root"
    kinds = builtin_kinds()
    before = reconcile(specset(
        doc("File", "same", {"path": str(root / "same"), "content": "x"}),
        doc("File", "old", {"path": str(root / "old"), "content": "x"}),
        doc("File", "kept", {"path": str(root / "kept"), "content": "x", "prune": False}),
    ), ctx, kinds, {}, "c1").records
    (root / "same").write_text("edited")
    ctx.close()
    # A later process plans: no live devices, only the records and the disk.
    planner = make_ctx(tmp_path, MockFactory(), commands={"restart": ("/bin/true",)})
    new = specset(
        doc("File", "same", {"path": str(root / "same"), "content": "x"}),
        doc("Command", "restart", {"command": "restart", "dependsOn": ["same"]}, generation=7),
        doc("Output", "led", {"pin": "led1", "state": "on"}),
        doc("Teapot", "t", {}),
    )
    steps = {s.key: (s.action, s.detail) for s in plan(new, planner, kinds, before)}
    assert steps["File/same"][0] == "change" and "content sha256" in steps["File/same"][1]
    assert steps["Command/restart"] == (
        "change", "would run restart (/bin/true) once for generation 7 (after File/same)")
    assert steps["Output/led"] == ("change", "would set led1 (GPIO17) is on")
    assert steps["Teapot/t"][0] == "invalid" and "UnknownKind" in steps["Teapot/t"][1]
    assert steps["File/old"] == ("prune", f"would remove {root / 'old'}")
    assert steps["File/kept"] == ("keep", "removed from the spec; its effect stays "
                                          "(prune: false)")
    assert (root / "same").read_text() == "edited" and (root / "old").exists()
    assert planner.devices == {}


def test_plan_never_claims_pins(tmp_path):
    from giter_agent.reconcile.plan import NoPins, refuse_pins

    ctx = make_ctx(tmp_path, MockFactory())
    ctx.pin_factory_maker = refuse_pins
    steps = plan(specset(doc("Output", "led", {"pin": "led1", "state": "pwm", "value": 0.5}),
                         doc("Sensor", "b", {"source": "digital", "pin": "button1"})),
                 ctx, builtin_kinds(), {})
    assert [s.action for s in steps] == ["change", "change"]
    with pytest.raises(NoPins):
        ctx.pin_factory  # noqa: B018 - what a kind touching pins would hit


def test_plan_command_changes_nothing_even_beside_a_running_agent(tmp_path, publisher,
                                                                  capsys):
    rig = Rig(tmp_path, publisher,
              extra_config='[commands]\nallowed = { hello = ["/bin/true"] }\n')
    tip = rig.publish({
        "motd.yaml": doc("File", "motd", {"path": str(rig.root / "motd"), "content": "hi\n"}),
        "hello.yaml": doc("Command", "hello", {"command": "hello"}),
        "beacon.yaml": doc("Output", "beacon", {"pin": "led2", "state": "on"}),
    })
    assert rig.cli("sync", "--bundle", rig.bundle()) == 0
    capsys.readouterr()
    (rig.root / "motd").write_text("edited on the device\n")
    state_before = tree_digest(rig.state_dir)
    files_before = tree_digest(rig.root)
    with state_lock(rig.state_dir):  # the daemon holds the lock: plan still runs
        assert rig.cli("plan") == 0
        text = capsys.readouterr().out
        assert rig.cli("plan", "--json", "--all") == 0
        doc_ = json.loads(capsys.readouterr().out)
    assert text.splitlines()[0] == f"plan for spec {tip[:12]} (applied)"
    assert f"change   File/motd      would write: {rig.root / 'motd'} content sha256" in text
    assert "Command/hello" not in text  # ran for this generation; nothing to change
    assert text.splitlines()[-1] == "1 to change, 2 unchanged, 0 to prune, 0 kept, 0 invalid"
    assert doc_["spec"] == tip
    assert {s["key"]: s["action"] for s in doc_["steps"]} == {
        "File/motd": "change", "Command/hello": "none", "Output/beacon": "none"}
    assert tree_digest(rig.state_dir) == state_before
    assert tree_digest(rig.root) == files_before


def test_plan_before_any_spec(tmp_path, publisher, capsys):
    rig = Rig(tmp_path, publisher)
    assert rig.cli("plan") == 0
    assert capsys.readouterr().out.strip() == "no verified spec yet: nothing to plan"
    assert not rig.state_dir.exists()
