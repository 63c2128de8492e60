"""A staged rollout over a 20-device simulated fleet and one stick (real git, ssh-keygen).

Three waves: the two canaries (by label), half the fleet (by a stable hash of the device
id), everyone. The first rollout goes through: each wave opens only when the gate,
evaluated from the devices' signed status commits, is open, and ``advance`` records
those commits as evidence in its signed commit. In the second rollout a canary fails
its apply: ``status`` says so, ``advance`` refuses, nobody past the canaries ever runs
the new version, and ``abort`` brings the canary back with one more signed commit.
"""

from __future__ import annotations

import json
import re

from support.fleet import API, Fleet, capture, enrolled

from giter_agent.cli.main import main as agent_main
from giter_agent.spec.rollouts import bucket

IDS = [f"pi-{i:02d}" for i in range(20)]
CANARIES = ("pi-00", "pi-01")


def motd(version: str) -> str:
    return (f"{API}kind: File\nmetadata:\n  name: motd\n  selector: {{}}\nspec:\n"
            f"  path: ${{values.root}}/motd-{version}\n  content: \"{version}\\n\"\n")


def rollout(name: str, baseline: str) -> str:
    return (f"{API}kind: Rollout\nmetadata: {{name: {name}}}\nspec:\n"
            f"  baseline: \"{baseline}\"\n  resources: [fleet/motd.yaml]\n  waves:\n"
            "    - {name: canary, selector: {matchLabels: {ring: canary}}}\n"
            "    - {name: half, percent: 50}\n    - {name: all, percent: 100}\n"
            "  readyPercent: 100\n  openWaves: 1\n")


def round_trip(fleet: Fleet, devices: list, stick) -> None:
    """Ship the tip on the stick, every device syncs, the stick comes back: import."""
    fleet.ok("create", stick)
    for d in devices:
        assert d.cli("sync", "--usb", stick) in (0, 3), d.id
    out = fleet.ok("import", stick)
    assert out.count("ACCEPTED") == len(devices), out


def versions(devices: list) -> dict[str, str]:
    """device -> the motd version it runs (the newest file it wrote and still keeps)."""
    out = {}
    for d in devices:
        state = d.state().resources["File/motd"]
        out[d.id] = state.spec["path"].rsplit("-", 1)[1]
    return out


def gate(fleet: Fleet, name: str) -> tuple[int, dict]:
    code, out = fleet.cli("rollout", "status", name, "-o", "json")
    return code, json.loads(out)


def test_three_waves_open_on_signed_evidence_and_a_failed_canary_stops_the_rollout(
        tmp_path, fleet, stick):
    devices = enrolled(fleet, tmp_path, *IDS)
    for d in devices:
        if d.id in CANARIES:
            fleet.ok("label", d.id, "ring=canary")
        fleet.write(f"values/devices/{d.id}.yaml", f"root: {d.root}\n")
    fleet.write("fleet/motd.yaml", motd("v1"))
    fleet.ok("commit", "-m", "motd v1 everywhere")
    round_trip(fleet, devices, stick)
    assert set(versions(devices).values()) == {"v1"}

    # Rollout 1: v2, canaries first.
    fleet.write("fleet/motd.yaml", motd("v2"))
    fleet.write("rollouts/motd-v2.yaml", rollout("motd-v2", fleet.rev()))
    fleet.ok("commit", "-m", "motd v2, staged")
    out = fleet.ok("render", "--device", "pi-05")
    assert "baseline version: rollout motd-v2: wave" in out and "motd-v1" in out
    round_trip(fleet, devices, stick)
    running = versions(devices)
    assert {d for d, v in running.items() if v == "v2"} == set(CANARIES)
    half = {d for d in IDS if d not in CANARIES and bucket("motd-v2", d) < 50}
    held = next(d for d in devices if d.id not in CANARIES)
    code, out = capture(agent_main, ["-c", held.config, "plan", "--all"])
    assert code == 0 and "; baseline version: rollout motd-v2: wave " in out, out
    assert 0 < len(half) < 18  # the hash splits this fleet; the split never changes

    code, status = gate(fleet, "motd-v2")
    assert code == 0 and status["gate"] is True, status
    by_device = {d["device"]: d for d in status["devices"]}
    assert {d for d, v in by_device.items() if v["state"] == "ready"} == set(CANARIES)
    assert all(by_device[d]["state"] == "held" for d in IDS if d not in CANARIES)
    before = fleet.rev()
    out = fleet.ok("rollout", "advance", "motd-v2")
    assert "wave half open; 2 status commit(s) recorded as evidence" in out
    message = fleet.git("log", "-1", "--format=%B").stdout.decode()
    for d in CANARIES:  # the evidence: the canaries' signed status commits, on the hub
        sha = re.search(rf"^Evidence: {d} ([0-9a-f]{{40}})$", message, re.M).group(1)
        assert sha == fleet.rev(f"status/{d}")
        assert fleet.verify_with_git(sha, fleet.device_signers())
    assert fleet.verify_with_git("main", fleet.trust_file)
    assert fleet.git("rev-parse", "main~1").stdout.decode().strip() == before

    # Advancing again before the new wave reported is refused: the gate waits for it.
    code, out = fleet.cli("rollout", "advance", "motd-v2")
    assert code == 1 and "RolloutGateClosed" in out and "waiting: 2/" in out, out
    assert fleet.git("rev-parse", "main~1").stdout.decode().strip() == before
    round_trip(fleet, devices, stick)
    running = versions(devices)
    assert {d for d, v in running.items() if v == "v2"} == set(CANARIES) | half
    fleet.ok("rollout", "advance", "motd-v2")
    round_trip(fleet, devices, stick)
    assert set(versions(devices).values()) == {"v2"}
    code, status = gate(fleet, "motd-v2")
    assert status["why"].startswith("complete")

    # Rollout 2: v3. On pi-01 a folder sits where the new file goes: the canary fails.
    (devices[1].root / "motd-v3").mkdir()
    fleet.git("rm", "-q", "rollouts/motd-v2.yaml")
    fleet.write("fleet/motd.yaml", motd("v3"))
    fleet.write("rollouts/motd-v3.yaml", rollout("motd-v3", "deadbeef" * 5))
    code, out = fleet.cli("lint")
    assert code == 1 and "rollouts/motd-v3.yaml: RolloutBaselineUnknown" in out, out
    fleet.write("rollouts/motd-v3.yaml", rollout("motd-v3", fleet.rev()))
    fleet.ok("commit", "-m", "motd v3, staged")
    round_trip(fleet, devices, stick)
    code, status = gate(fleet, "motd-v3")
    by_device = {d["device"]: d for d in status["devices"]}
    assert code == 1 and status["gate"] is False and status["why"].startswith("stopped")
    assert by_device["pi-01"]["state"] == "failed"
    assert by_device["pi-00"]["state"] == "ready"
    code, out = fleet.cli("rollout", "advance", "motd-v3")
    assert code == 1 and "RolloutGateClosed" in out and "pi-01 failed" in out, out
    assert versions(devices)["pi-00"] == "v3"
    assert all(v == "v2" for d, v in versions(devices).items() if d not in CANARIES)

    # Pause and abort are signed commits too; abort brings everyone back to v2.
    fleet.ok("rollout", "pause", "motd-v3")
    out = fleet.ok("rollout", "abort", "motd-v3")
    assert "aborted" in out
    message = fleet.git("log", "-1", "--format=%B").stdout.decode()
    assert re.search(r"^Failed: pi-01 [0-9a-f]{40} fleet/motd.yaml: ", message, re.M)
    assert fleet.verify_with_git("main", fleet.trust_file)
    round_trip(fleet, devices, stick)
    assert set(versions(devices).values()) == {"v2"}
    assert (devices[0].root / "motd-v2").read_text() == "v2\n"
    code, out = fleet.cli("rollout", "advance", "motd-v3")
    assert code == 1 and "RolloutAborted" in out


def test_open_waves_that_miss_the_gate_within_the_time_limit_stop_the_rollout(
        tmp_path, fleet, stick):
    from giter_bundle.exchange import Exchange
    from giter_bundle.rollout import evaluate

    devices = enrolled(fleet, tmp_path, "pi-00", "pi-01", "pi-02")
    fleet.ok("label", "pi-00", "ring=canary")
    for d in devices:
        fleet.write(f"values/devices/{d.id}.yaml", f"root: {d.root}\n")
    fleet.write("fleet/motd.yaml", motd("v1"))
    fleet.ok("commit", "-m", "motd v1 everywhere")
    baseline = fleet.rev()
    fleet.write("fleet/motd.yaml", motd("v2"))
    fleet.write("rollouts/motd-v2.yaml", rollout("motd-v2", baseline) + "  timeLimit: 1h\n")
    fleet.ok("commit", "-m", "motd v2, staged, an hour for the canary")
    opened = int(fleet.git("log", "-1", "--format=%ct").stdout)
    fleet.write("groups/lobby/note.yaml", motd("x").replace("name: motd", "name: note")
                .replace("  selector: {}\n", "").replace("${values.root}", str(tmp_path)))
    fleet.ok("commit", "-m", "an unrelated change later: the wave opened before it")

    with Exchange.open(fleet.root) as exchange:
        soon = evaluate(exchange, "motd-v2", now=opened + 600)
        late = evaluate(exchange, "motd-v2", now=opened + 3601)
    assert soon.opened_at == opened and not soon.timed_out
    assert soon.why.startswith("waiting: 0/1 devices")
    assert late.timed_out and not late.open
    assert late.why.startswith("stopped: timed out: 0/1 devices of the open waves Ready on "
                               "the new generation 1h after the wave opened (timeLimit 1h, "
                               "need 100%)")
