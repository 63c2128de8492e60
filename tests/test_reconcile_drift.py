"""Drift: a device that differs from an unchanged spec is corrected and the correction
recorded, or, with ``reconcile: observe-only``, only reported. End to end through the
agent's timer pass, the record lands in a signed status commit."""

from __future__ import annotations

from gpiozero.pins.mock import MockFactory, MockPWMPin
from support.kinds import Rig, condition, doc, ready, specset

from giter_agent.kinds import builtin_kinds
from giter_agent.reconcile.engine import reconcile


def test_hand_edits_are_corrected_and_counted(ctx, clock, tmp_path):
    target = tmp_path / "root" / "motd"
    spec = specset(doc("File", "motd", {"path": str(target), "content": "hello\n"}))
    kinds = builtin_kinds()
    records = reconcile(spec, ctx, kinds, {}, "c1").records
    assert "drift" not in records["File/motd"].status
    for n, minute in [(1, "05"), (2, "10")]:
        target.write_text("edited by hand\n")
        clock.advance(300)
        records = reconcile(spec, ctx, kinds, records, "c1").records
        assert target.read_text() == "hello\n"
        drift = records["File/motd"].status["drift"]
        assert drift["corrections"] == n and drift["lastCorrected"] == f"2027-01-15T08:{minute}:00Z"
        assert drift["changes"][0].startswith(f"{target} content sha256 ")
        assert ready(records["File/motd"]) == (True, "Applied")


def test_observe_only_reports_and_never_acts(ctx, clock, tmp_path):
    target = tmp_path / "root" / "motd"
    target.write_text("hello\n")
    target.chmod(0o644)
    spec = specset(doc("File", "motd", {"path": str(target), "content": "hello\n",
                                        "reconcile": "observe-only"}))
    kinds = builtin_kinds()
    records = reconcile(spec, ctx, kinds, {}, "c1").records
    assert ready(records["File/motd"]) == (True, "InSync")
    assert condition(records["File/motd"], "Drifted")["status"] == "False"
    target.write_text("edited by hand\n")
    clock.advance(60)
    records = reconcile(spec, ctx, kinds, records, "c1").records
    assert target.read_text() == "edited by hand\n"  # reported, not corrected
    assert ready(records["File/motd"]) == (False, "DriftDetected")
    drifted = condition(records["File/motd"], "Drifted")
    assert drifted["status"] == "True" and drifted["lastTransitionTime"] == "2027-01-15T08:01:00Z"
    assert "content sha256" in drifted["message"] and "does not act" in drifted["message"]
    assert records["File/motd"].status["observedGeneration"] == 1  # from the in-sync pass
    # An observe-only resource removed from the spec is not pruned either.
    gone = reconcile(specset(), ctx, kinds, records, "c2")
    assert gone.pruned == [] and target.exists()


def test_a_timer_pass_corrects_drift_and_commits_it_signed(tmp_path, publisher, clock):
    rig = Rig(tmp_path, publisher)
    factory = MockFactory(pin_class=MockPWMPin)
    rig.publish({"motd.yaml": doc("File", "motd", {"path": str(rig.root / "motd"),
                                                   "content": "hello\n"}),
                 "relay.yaml": doc("Output", "relay", {"pin": "relay1", "state": "on"})})
    agent = rig.agent(clock, factory)
    try:
        assert agent.sync([rig.bundle()], source="test").exit_code == 0
        commits = rig.status_commits()
        assert len(commits) == 1
        clock.advance(60)
        state_file = rig.state_dir / "state.msgpack"
        before = state_file.stat()
        agent.reconcile_pass()  # nothing drifted: no new status commit
        assert rig.status_commits() == commits
        # ... and no write to the SD card: the state file is the same file, untouched.
        after = state_file.stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        (rig.root / "motd").write_text("edited\n")
        factory.pin("GPIO27").state = 0
        clock.advance(60)
        report = agent.reconcile_pass()
        assert report.not_ready == []
    finally:
        agent.close()
    assert (rig.root / "motd").read_text() == "hello\n"
    assert len(rig.status_commits()) == 2
    motd = rig.show(f"devices/{rig.id}/motd.yaml")
    assert "drift:" in motd and "corrections: 1" in motd
    assert "lastCorrected: '2027-01-15T08:02:00Z'" in motd
    relay = rig.show(f"devices/{rig.id}/relay.yaml")
    assert "relay1 (GPIO27) was off, spec says on" in relay
