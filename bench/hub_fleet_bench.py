"""A fleet against one gitolite hub over SSH on loopback: sync latency and hub CPU per sync.

Starts the same hub the end-to-end test uses (``tests/support/servers.py`` ``Gitolite``:
gitolite3 behind OpenSSH's sshd on 127.0.0.1, as a unix user made for the run and
removed after; needs root), makes N devices, each with its own config, state
directory, files root and ed25519 key (the agent's own ``device_key``, which is also
its SSH key to the hub), enrols them in one signed commit, generates the hub's rules
with ``giter-bundle hub gitolite`` and pushes them, and has the publisher push a spec
with one File resource per device. Then device processes sync, in rounds:

1. first sync: full fetch, verify, apply, sign and push the first status commit;
2. incremental: the publisher pushed one more commit; fetch it, apply, push status;
3. nothing new: fetch lists refs, nothing is pushed.

``--workers`` processes run at once (the hub sees at most that many devices at a time),
each taking the next ``--batch`` devices from a shared queue, each device through
``Agent.sync_network`` as ``giter-agent sync`` does (one process per worker, not per
device: interpreter start-up is the device's cost, not the hub's). ``--time-limit``
stops handing out batches.

Measured on the hub side: each SSH session's duration from sshd's own log (the
"Accepted publickey" line to the "Disconnected" line of the same client port,
timestamped as sshd writes them) and the CPU of sshd and everything it ran (gitolite,
git) per sync, from ``/proc/<sshd>/stat`` (utime + stime + the children's). Measured
on the device side: each sync's wall time.

    sudo python3 bench/hub_fleet_bench.py --devices 1000 --workers 4 --batch 25
    sudo python3 bench/hub_fleet_bench.py --devices 1000 --rounds first,nothing

Results: docs/performance.md, "A thousand devices against one gitolite hub".
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))
API = "apiVersion: giter.dev/v1alpha1\n"


def _cpu(pid: int) -> float:
    """sshd's CPU seconds, its reaped children's (sessions, gitolite, git) included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def _motd(root: Path, text: str) -> bytes:
    return (f"{API}kind: File\nmetadata: {{name: motd}}\n"
            f"spec: {{path: {root}/motd, content: {json.dumps(text)}}}\n").encode()


def _worker(queue: Any, results: Any, configs: list[str]) -> None:
    from giter_agent.config.agent_toml import load
    from giter_agent.sync.agent import Agent

    while True:
        batch = queue.get()
        if batch is None:
            return
        for index in batch:
            start = time.monotonic()
            agent = Agent(load(Path(configs[index])))
            try:
                report = agent.sync_network()
                outcome = report.outcome
            except Exception as exc:  # a bench counts failures, it does not stop
                outcome = f"error: {exc}"
            finally:
                agent.close()
            results.put((index, outcome, time.monotonic() - start))


def run_round(name: str, configs: list[str], workers: int, batch: int, limit: float,
              hub: Any, sshd_pid: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    queue, results = ctx.Queue(), ctx.Queue()
    log_start = len(hub.log)
    cpu0 = _cpu(sshd_pid)
    start = time.monotonic()
    procs = [ctx.Process(target=_worker, args=(queue, results, configs)) for _ in range(workers)]
    for p in procs:
        p.start()
    order = list(range(len(configs)))
    handed = 0
    for i in range(0, len(order), batch):
        queue.put(order[i:i + batch])
        handed += len(order[i:i + batch])
    for _ in procs:
        queue.put(None)
    done: list[tuple[int, str, float]] = []
    while len(done) < handed:
        if time.monotonic() - start > limit:
            break
        try:
            done.append(results.get(timeout=5))
        except Exception:  # queue.Empty: look at the clock again
            continue
    for p in procs:
        p.terminate() if time.monotonic() - start > limit else p.join()
    wall = time.monotonic() - start
    time.sleep(1.0)  # sshd reaps the last sessions and logs their ends
    cpu = _cpu(sshd_pid) - cpu0
    sessions = _sessions(hub.log[log_start:])
    outcomes: dict[str, int] = {}
    for _i, outcome, _s in done:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    device = sorted(s for _i, _o, s in done)
    return {"round": name, "devices": len(done), "wall_s": wall, "outcomes": outcomes,
            "syncs_per_s": len(done) / wall if wall else 0.0,
            "hub_cpu_s": cpu, "hub_cpu_ms_per_sync": 1000 * cpu / max(1, len(done)),
            "sessions": len(sessions), "hub_session_ms": _percentiles(sessions),
            "device_sync_ms": _percentiles(device)}


def _sessions(lines: list[tuple[float, str]]) -> list[float]:
    opened: dict[str, float] = {}
    durations = []
    for t, line in lines:
        m = re.search(r"Accepted publickey for \S+ from \S+ port (\d+)", line)
        if m:
            opened[m.group(1)] = t
            continue
        m = re.search(r"(?:Disconnected from user \S+|Connection closed by) \S+ port (\d+)",
                      line)
        if m and m.group(1) in opened:
            durations.append(t - opened.pop(m.group(1)))
    return sorted(durations)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    values = sorted(values)

    def pick(q: float) -> float:
        return 1000 * values[min(len(values) - 1, int(q * len(values)))]

    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99),
            "max": 1000 * values[-1], "mean": 1000 * statistics.fmean(values)}


def main() -> int:
    from support.servers import Gitolite

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--workers", type=int, default=4, help="device processes at once")
    p.add_argument("--batch", type=int, default=25, help="devices a worker takes at a time")
    p.add_argument("--time-limit", type=float, default=1800, help="seconds per round")
    p.add_argument("--rounds", default="first,incremental,nothing",
                   help="which rounds, in order (default all three)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    why = Gitolite.missing()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2

    from giter_agent.config.agent_toml import load
    from giter_agent.history.store import History
    from giter_agent.trust import sshsig
    from giter_agent.trust.devicekey import load_or_create
    from giter_bundle import signing
    from giter_bundle.cli import main as bundle_main
    from giter_bundle.enrolment import EnrolledDevice
    from giter_bundle.publisher import PublisherRepo

    base = Path(tempfile.mkdtemp(prefix="giter-hubbench-"))
    hub = Gitolite(base / "hub")
    results = []
    try:
        t = time.monotonic()
        hub.start()
        pub_key = base / "publisher_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(pub_key)],
                       check=True)
        fleet = base / "fleet"
        assert bundle_main(["init", str(fleet), "--signing-key", str(pub_key), "--author",
                            "Ops <ops@example.invalid>"]) == 0
        known = base / "known_hosts"
        known.write_text(hub.known_hosts_line())
        url = hub.url("fleet")
        configs, files = [], {}
        for i in range(args.devices):
            name = f"dev-{i:04d}"
            d = base / "devices" / name
            (d / "root").mkdir(parents=True)
            (d / "agent.toml").write_text(
                f'device_id = "{name}"\nstate_dir = "state"\nboard = "generic-mock"\n'
                f'allowed_signers = "{fleet}/.giter/trust/allowed_signers"\n'
                f'[files]\nroots = ["{d / "root"}"]\n'
                f'[network]\nurl = "{url}"\nknown_hosts = "{known}"\n')
            config = load(d / "agent.toml")
            config.state_dir.mkdir(mode=0o700)
            key = load_or_create(config.state_dir / "device_key")
            files.update(EnrolledDevice(name, sshsig.public_key_of(key), ()).files())
            files[f"devices/{name}/motd.yaml"] = _motd(d / "root", "first\n")
            configs.append(str(d / "agent.toml"))
        history = History(fleet / ".git")
        publisher = PublisherRepo(fleet / ".git", signing.load_key(pub_key), history=history,
                                  identity="Ops <ops@example.invalid>")
        publisher.commit(files, f"Enrol {args.devices} devices, one File each")
        admin = hub.admin_clone(base / "admin")
        assert bundle_main(["-C", str(fleet), "hub", "gitolite", str(admin)]) == 0
        t_admin = time.monotonic()
        hub.push_admin(admin)
        admin_s = time.monotonic() - t_admin
        hub.git(pub_key, "-C", fleet, "push", "-q", url, "main")
        setup_s = time.monotonic() - t
        print(f"set-up {setup_s:.0f} s (gitolite compile of {args.devices + 1} keys: "
              f"{admin_s:.1f} s)", file=sys.stderr)
        sshd_pid = hub.proc.pid
        names = {"first": "first sync", "incremental": "incremental", "nothing": "nothing new"}
        for name in (names[r] for r in args.rounds.split(",")):
            if name == "incremental":
                publisher.commit({f"devices/dev-{i:04d}/motd.yaml": _motd(
                    base / "devices" / f"dev-{i:04d}" / "root", "second\n")
                    for i in range(args.devices)}, "Second release")
                hub.git(pub_key, "-C", fleet, "push", "-q", url, "main")
            r = run_round(name, configs, args.workers, args.batch, args.time_limit, hub,
                          sshd_pid)
            results.append(r)
            if not args.json:
                s, dv = r["hub_session_ms"], r["device_sync_ms"]
                print(f"{name:<12} {r['devices']} devices in {r['wall_s']:.0f} s "
                      f"({r['syncs_per_s']:.1f}/s) {r['outcomes']}\n"
                      f"  hub: {r['sessions']} ssh sessions, ms p50 {s.get('p50', 0):.0f} "
                      f"p90 {s.get('p90', 0):.0f} p99 {s.get('p99', 0):.0f} max "
                      f"{s.get('max', 0):.0f}; CPU {r['hub_cpu_ms_per_sync']:.0f} ms/sync\n"
                      f"  device sync ms: p50 {dv.get('p50', 0):.0f} p90 {dv.get('p90', 0):.0f}"
                      f" p99 {dv.get('p99', 0):.0f} max {dv.get('max', 0):.0f}", flush=True)
        refs = subprocess.run(["git", "--git-dir", str(hub.repo_path("fleet")), "for-each-ref",
                               "refs/heads/status/"], capture_output=True, check=True).stdout
        size = sum(f.stat().st_size for f in hub.repo_path("fleet").rglob("*") if f.is_file())
        print(f"hub: {len(refs.splitlines())} status refs, repository {size / 2**20:.1f} MiB",
              flush=True)
        if args.json:
            print(json.dumps(results, indent=2))
    finally:
        hub.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
