"""Status history growth: status commits per day and repository bytes per day on a typical board.

Simulates a board for a day (or ``--hours``) with a fake clock, through the agent's
own timer pass (``Agent.reconcile_pass``), exactly as the daemon drives it: the pass
runs whenever ``Agent.next_wakeup()`` is due. The board carries what a small
deployment does: a CPU temperature sensor sampled every 10 s (a daily load curve,
hourly jobs, sensor noise), a door button pressed now and then, 5 files and 2
outputs. The report interval is 15 minutes. It prints the passes made, the status
commits made, and how much ``state_dir/repo.git`` grew, as the agent leaves it (loose
objects) and as ``git gc`` would pack it.

    python3 bench/status_growth_bench.py                 # the typical board, 24 h
    python3 bench/status_growth_bench.py --deadband 0.2  # a too-tight deadband
    python3 bench/status_growth_bench.py --button-deadband 0   # every press reported

Results and discussion: docs/performance.md, "Status history growth".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tools"))

DEVICE = "pi-bench"
API = "apiVersion: giter.dev/v1alpha1\n"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def cpu_temperature(t: float, rng: random.Random) -> float:
    """A Pi in a cabinet: 44 °C at night, 52 °C mid-afternoon, +7 °C during a 10-minute
    job at the top of each hour, Gaussian noise (sd 0.3 °C), in the sensor's ~0.5 °C
    steps."""
    day = (t % 86400) / 86400
    base = 48 + 4 * math.sin(2 * math.pi * (day - 0.375))  # peak at 15:00
    job = 7.0 if (t % 3600) < 600 else 0.0
    value = base + job + rng.gauss(0, 0.3)
    return round(value * 2) / 2


def resource(kind: str, name: str, spec: dict) -> bytes:
    return (f"{API}kind: {kind}\nmetadata: {json.dumps({'name': name, 'generation': 1})}\n"
            f"spec: {json.dumps(spec)}\n").encode()


def spec_files(root: Path, args: argparse.Namespace) -> dict[str, bytes]:
    prefix = f"devices/{DEVICE}"
    files = {
        f"{prefix}/cpu.yaml": resource("Sensor", "cpu", {
            "source": "cpu-temperature", "interval": 10, "deadband": args.deadband,
            "thresholds": {"above": 70}}),
        f"{prefix}/door.yaml": resource("Sensor", "door", {
            "source": "digital", "pin": "button1", "input": "button", "interval": 10,
            **({"deadband": args.button_deadband} if args.button_deadband is not None
               else {})}),
        f"{prefix}/beacon.yaml": resource("Output", "beacon", {"pin": "led1", "state": "on"}),
        f"{prefix}/fan.yaml": resource("Output", "fan", {"pin": "relay1", "state": "on"}),
    }
    for i in range(5):
        files[f"{prefix}/file-{i}.yaml"] = resource("File", f"file-{i}", {
            "path": str(root / f"etc/app-{i}.conf"), "content": f"setting = {i}\n" * 20,
            "mode": "0644"})
    return files


def tree_bytes(path: Path) -> tuple[int, int, int]:
    """(apparent bytes, bytes on disk, file count) under ``path``."""
    apparent = disk = count = 0
    for p in path.rglob("*"):
        if p.is_file():
            st = p.stat()
            apparent += st.st_size
            disk += st.st_blocks * 512
            count += 1
    return apparent, disk, count


def packed_bytes(repo: Path) -> int | None:
    """What ``git gc`` would make of the repository (a copy), or None without git."""
    if shutil.which("git") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "repo.git"
        shutil.copytree(repo, copy)
        subprocess.run(["git", "--git-dir", str(copy), "gc", "-q", "--prune=now"], check=True,
                       env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": tmp})
        return tree_bytes(copy)[0]


def run(args: argparse.Namespace) -> None:
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    from giter_agent.config.agent_toml import load
    from giter_agent.sync.agent import Agent
    from giter_agent.trust import sshsig
    from giter_bundle.publisher import PublisherRepo

    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="status-growth-"))
    try:
        root = work / "root"
        root.mkdir()
        sysfs = work / "sys"
        zone = sysfs / "class/thermal/thermal_zone0"
        zone.mkdir(parents=True)
        key = sshsig.generate_ed25519()
        signers = work / "allowed_signers"
        signers.write_text(f'ops namespaces="git" {sshsig.public_key_of(key).openssh()}\n')
        publisher = PublisherRepo(work / "fleet.git", key)
        publisher.commit(spec_files(root, args), "a typical board")
        bundle = publisher.bundle(work / "fleet.bundle")
        config = work / "agent.toml"
        config.write_text(
            f'device_id = "{DEVICE}"\nstate_dir = "state"\nboard = "generic-mock"\n'
            f'allowed_signers = "{signers}"\n[files]\nroots = ["{root}"]\n'
            f"[agent]\nreport_interval = {args.report_interval}\n")

        start = 1_800_000_000.0 - 1_800_000_000.0 % 86400  # midnight UTC
        clock = Clock(start)
        factory = MockFactory(pin_class=MockPWMPin)
        agent = Agent(load(config), clock=clock, pin_factory_maker=lambda board: factory)
        agent.ctx.sysfs = sysfs
        (zone / "temp").write_text(f"{round(cpu_temperature(start, rng) * 1000)}\n")
        report = agent.sync([bundle], source="bench")
        assert report.exit_code == 0, (report.outcome, report.not_ready)
        repo = work / "state" / "repo.git"
        before = tree_bytes(repo)
        packed_before = packed_bytes(repo)
        state = agent.state_store.load()
        tips = {state.status_tip}
        last = {key: rec.status for key, rec in state.resources.items()}
        causes: dict[str, int] = {}

        end = start + args.hours * 3600
        presses = sorted(start + rng.uniform(6 * 3600, 22 * 3600)
                         for _ in range(round(args.presses * args.hours / 24)))
        button = factory.pin("GPIO24")
        passes = 0
        wall = time.monotonic()
        while True:
            wake = agent.next_wakeup()
            if wake is None or wake > end:
                break
            while presses and presses[0] <= wake:  # a press between two passes
                presses.pop(0)
                button.drive_low()
                button.drive_high()
            clock.now = wake
            (zone / "temp").write_text(f"{round(cpu_temperature(wake, rng) * 1000)}\n")
            agent.reconcile_pass()
            passes += 1
            state = agent.state_store.load()
            if state.status_tip not in tips:
                tips.add(state.status_tip)
                cause = _cause(last, state.resources, args.report_interval)
                causes[cause] = causes.get(cause, 0) + 1
                last = {key: rec.status for key, rec in state.resources.items()}
        wall = time.monotonic() - wall
        agent.close()
        after = tree_bytes(repo)
        commits = len(tips) - 1  # the sync's first commit is not the day's growth
        packed = packed_bytes(repo)
        by_cause = ", ".join(f"{n} {cause}" for cause, n in sorted(causes.items(),
                                                                  key=lambda kv: -kv[1]))
        days = args.hours / 24
        print(f"simulated:        {args.hours:g} h, report interval {args.report_interval:g} s, "
              f"cpu deadband {args.deadband:g} °C, button deadband "
              f"{'none' if args.button_deadband is None else args.button_deadband}, "
              f"{args.presses} presses/day")
        print(f"passes:           {passes} ({passes / days:.0f}/day), {wall:.1f} s wall "
              f"({1000 * wall / max(passes, 1):.1f} ms per pass on this machine)")
        print(f"status commits:   {commits} ({commits / days:.0f}/day): {by_cause}")
        print("                  (interval: on a report-interval boundary; early: a value "
              "left its deadband)")
        grown = after[0] - before[0]
        print(f"repo.git growth:  {grown / 1024:.0f} KiB apparent "
              f"({grown / max(commits, 1):.0f} bytes per status commit), "
              f"{(after[1] - before[1]) / 1024:.0f} KiB on disk, "
              f"{after[2] - before[2]} new files (loose objects)")
        print(f"per day:          {grown / days / 1024:.0f} KiB/day apparent, "
              f"{(after[1] - before[1]) / days / 1024:.0f} KiB/day on disk")
        if packed is not None and packed_before is not None:
            print(f"packed (git gc):  {(packed - packed_before) / days / 1024:.0f} KiB/day "
                  f"({packed_before / 1024:.0f} KiB before the day, {packed / 1024:.0f} KiB "
                  "after)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _cause(before: dict, after: dict, report_interval: float) -> str:
    """Why a status commit was made: which sensors' status changed, and whether on a
    report-interval boundary (an interval report) or off it (deadband, press, threshold)."""
    from datetime import datetime

    parts = []
    for key in sorted(k for k in after if after[k]["status"] != before.get(k)):
        name = key.split("/", 1)[1]
        status = after[key].status
        old_flags = [c["status"] for c in before.get(key, {}).get("conditions", [])[1:]]
        if [c["status"] for c in status["conditions"][1:]] != old_flags:
            parts.append(f"{name} threshold")
            continue
        stamp = status.get("observed", {}).get("time")
        at = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else 0
        parts.append(name if at % report_interval == 0 else f"{name} early")
    if not any(p.endswith(("early", "threshold")) for p in parts):
        return "interval (" + "+".join(parts) + ")"
    return "+".join(parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hours", type=float, default=24)
    p.add_argument("--report-interval", type=float, default=900)
    p.add_argument("--deadband", type=float, default=1.0, help="CPU sensor deadband, °C")
    p.add_argument("--button-deadband", type=float, default=None,
                   help="set 0 to report every press at once (default: at the report)")
    p.add_argument("--presses", type=int, default=20, help="button presses per day")
    p.add_argument("--seed", type=int, default=1)
    run(p.parse_args())


if __name__ == "__main__":
    main()
