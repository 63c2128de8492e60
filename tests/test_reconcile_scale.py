"""A 500-resource spec from real git, end to end through ``giter-agent sync --bundle``.

Every built-in kind that needs no outside system takes part (files, outputs, sensors,
commands, agent settings, observe-only, prune: false, dependsOn chains); a second
spec changes 50 files and removes 100, which are pruned.
"""

from __future__ import annotations

from support.kinds import Rig, doc


def resources(rig: Rig, changed: int = 0, removed: int = 0) -> dict[str, bytes | None]:
    root = rig.root
    out: dict[str, bytes | None] = {}
    for i in range(445):
        name = f"file-{i:03d}"
        if i >= 445 - removed:
            out[f"{name}.yaml"] = None
            continue
        spec = {"path": str(root / f"dir{i % 10}" / name),
                "content": f"{name} v{2 if i < changed else 1}\n", "mode": "0640"}
        if i % 5 == 4:
            spec["dependsOn"] = [f"file-{i - 4:03d}"]  # chains across the whole spec
        out[f"{name}.yaml"] = doc("File", name, spec, generation=2 if i < changed else 1)
    for i in range(45):
        out[f"cmd-{i:02d}.yaml"] = doc("Command", f"cmd-{i:02d}",
                                       {"command": "tick", "dependsOn": [f"file-{i:03d}"]})
    # A one-shot sync cannot hold a level between 0 and 1 (software PWM dies with it):
    # full brightness through PWM keeps the PWM path without needing the daemon.
    for name, spec in [("led1", {"state": "on"}), ("led2", {"state": "pwm", "value": 1.0}),
                       ("relay1", {"state": "on"}), ("relay2", {"state": "off"}),
                       ("buzzer", {"state": "blink", "onTime": 0.1, "count": 2})]:
        out[f"out-{name}.yaml"] = doc("Output", f"out-{name}", {"pin": name, **spec})
    out["door.yaml"] = doc("Sensor", "door", {"source": "digital", "pin": "button1",
                                              "input": "button", "interval": 5})
    out["pir.yaml"] = doc("Sensor", "pir", {"source": "digital", "pin": "motion",
                                            "deadband": 0, "interval": 1})
    out["agent.yaml"] = doc("Agent", "agent", {"reportInterval": 600, "logLevel": "info"})
    out["watched.yaml"] = doc("File", "watched", {"path": str(root / "watched"),
                                                  "content": "as installed\n",
                                                  "reconcile": "observe-only"})
    out["kept.yaml"] = doc("File", "kept", {"path": str(root / "kept"), "content": "k\n",
                                            "prune": False})
    return out


def test_500_resources_end_to_end(tmp_path, publisher, capsys):
    rig = Rig(tmp_path, publisher, extra_config='[commands]\nallowed = { tick = ["/bin/true"] }\n')
    (rig.root / "watched").write_text("as installed\n")
    (rig.root / "watched").chmod(0o644)
    first = resources(rig)
    assert len(first) == 500
    rig.publish(first, "500 resources")

    code = rig.cli("sync", "--bundle", rig.bundle())
    assert code == 0, capsys.readouterr().err
    state = rig.state()
    assert len(state.resources) == 500 and state.last_sync["notReady"] == []
    assert len(list(rig.root.glob("dir*/file-*"))) == 445
    assert (rig.root / "dir3" / "file-123").read_text() == "file-123 v1\n"
    # Every resource's status is in the signed status commit, as one CR file each.
    tree = publisher.git("--git-dir", rig.state_dir / "repo.git", "ls-tree", "-r",
                         "--name-only", state.status_tip).stdout.decode().split()
    assert len([p for p in tree if p.startswith(f"devices/{rig.id}/")]) == 500
    assert "observedGeneration: 1" in rig.show(f"devices/{rig.id}/cmd-07.yaml")

    second = resources(rig, changed=50, removed=100)
    rig.publish(second, "change 50, remove 100")
    assert rig.cli("sync", "--bundle", rig.bundle()) == 0
    state = rig.state()
    assert len(state.resources) == 400
    assert len(list(rig.root.glob("dir*/file-*"))) == 345
    assert (rig.root / "dir3" / "file-023").read_text() == "file-023 v2\n"
    assert (rig.root / "kept").exists()  # kept, and still in the spec anyway
