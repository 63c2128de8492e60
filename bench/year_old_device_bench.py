"""A year-old device against a fresh one: USB sync and status push of one new status commit.

Builds two devices with the agent's own code: a fresh one (a first sync and a few status
commits) and a year-old one (the same, then ``--status-commits`` more status commits of
the shape the agent writes, parents ``[previous status, observed spec]``, spread over
``--packs`` packs as an agent of the previous release left them). Then, for each:

- **USB**: a stick with one new spec commit and ``hub-status.txt`` saying the hub holds
  the device's status tip: ``Agent.sync`` + ``Agent.write_status_bundle`` (import, pass,
  one status commit, the status bundle for the outbox);
- **network**: one new spec commit on a ``git daemon`` hub on 127.0.0.1 that holds the
  device's status branch: ``Agent.sync_network`` (fetch, pass, status commit, push).

It prints the wall time of each (median of ``--runs``, each from a copy of the device)
and the ratio old / fresh, with the packs before and after. The first USB syncs after
the upgrade are shown apart: on the year-old device they merge the packs the old
release left, a bounded number of objects per sync, until a sync merges no more; the
runs start from the merged device. The goal is a
ratio within 1.5x: the export reads only the chain back to what the hub holds, and
packs are consolidated so a lookup probes a logarithmic number of them.

    python3 bench/year_old_device_bench.py                        # 20,000 commits, 1,000 packs
    python3 bench/year_old_device_bench.py --status-commits 56000 --packs 1100

Results: docs/performance.md, "A year-old device".
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tools"))

DEVICE = "pi-old"
API = "apiVersion: giter.dev/v1alpha1\n"
STATUS = f"refs/heads/status/{DEVICE}"
MAX_BACKLOG_SYNCS = 100  # syncs the backlog of old packs may take before the runs


def spec(root: Path, version: int) -> dict[str, bytes]:
    return {f"devices/{DEVICE}/file-{i}.yaml": (
        f"{API}kind: File\nmetadata:\n  name: file-{i}\nspec:\n  path: {root}/app-{i}.conf\n"
        f"  content: \"setting = {version if i == 0 else 1}\\n\"\n  mode: \"0644\"\n").encode()
        for i in range(5)}


def git(*args: str | Path) -> bytes:
    return subprocess.run(["git", *map(str, args)], check=True, capture_output=True).stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def grow(repo: Path, state_dir: Path, commits: int, packs: int) -> None:
    """``commits`` more status commits on the device's status tip, in ``packs`` packs."""
    from dulwich.object_store import DiskObjectStore
    from dulwich.objects import Blob, Commit, Tree

    from giter_agent.state.store import StateStore

    store_state = StateStore(state_dir)
    state = store_state.load()
    assert state.status_tip and state.applied
    store = DiskObjectStore(str(repo / "objects"))
    spec_commit = store[state.applied.encode()]
    base = store[spec_commit.tree]
    giter = store[base[b".giter"][1]] if b".giter" in base else Tree()
    prev = state.status_tip.encode()
    per_pack = max(1, commits // packs)
    batch: list = []
    for i in range(commits):
        blob = Blob.from_string(f"apiVersion: giter.dev/v1alpha1\nkind: DeviceStatus\n"
                                f"status: {{report: {i}}}\n".encode())
        status = Tree()
        status.add(f"{DEVICE}.yaml".encode(), 0o100644, blob.id)
        dot = giter.copy()
        dot.add(b"status", 0o40000, status.id)
        root = base.copy()
        root.add(b".giter", 0o40000, dot.id)
        commit = Commit()
        commit.tree, commit.parents = root.id, [prev, spec_commit.id]
        commit.author = commit.committer = f"giter-agent {DEVICE} <d@devices.invalid>".encode()
        commit.author_time = commit.commit_time = 1_700_000_000 + 600 * i
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = f"status: report {i}\n".encode()
        batch += [(blob, None), (status, None), (dot, None), (root, None), (commit, None)]
        prev = commit.id
        if (i + 1) % per_pack == 0 or i == commits - 1:
            store.add_objects(batch)
            batch = []
    store.close()
    git("--git-dir", repo, "update-ref", STATUS, prev.decode())
    state.status_tip = prev.decode()
    store_state.save(state)


class Device:
    """One device (state, config, files) and the publisher and hub it talks to."""

    def __init__(self, base: Path, root: Path, extra_commits: int, packs: int) -> None:
        from giter_agent.trust import sshsig
        from giter_bundle.publisher import PublisherRepo

        self.base = base
        self.root = root  # outside ``base``: the spec names it, and copies share it
        self.root.mkdir(parents=True)
        base.mkdir(parents=True)
        key = sshsig.generate_ed25519()
        signers = base / "allowed_signers"
        signers.write_text(f'ops namespaces="git" {sshsig.public_key_of(key).openssh()}\n')
        self.publisher = PublisherRepo(base / "fleet.git", key)
        self.publisher.commit(spec(self.root, 1), "v1")
        self.port = free_port()
        self.hub = base / "hub" / "fleet.git"
        self.config = base / "agent.toml"
        self.config.write_text(
            f'device_id = "{DEVICE}"\nstate_dir = "state"\nboard = "generic-mock"\n'
            f'allowed_signers = "{signers}"\n[files]\nroots = ["{self.root}"]\n'
            f'[network]\nurl = "git://127.0.0.1:{self.port}/fleet.git"\n')
        agent = self.agent()
        report = agent.sync([self.publisher.bundle(base / "v1.bundle")], source="bench")
        assert report.exit_code == 0, report.message
        agent.close()
        if extra_commits:
            grow(self.state / "repo.git", self.state, extra_commits, packs)
        self.version = 1

    @property
    def state(self) -> Path:
        return self.base / "state"

    def agent(self):
        from gpiozero.pins.mock import MockFactory

        from giter_agent.config.agent_toml import load
        from giter_agent.sync.agent import Agent

        factory = MockFactory()
        return Agent(load(self.config), clock=time.time,
                     pin_factory_maker=lambda board: factory)

    def packs(self) -> int:
        return len(list((self.state / "repo.git/objects/pack").glob("*.idx")))

    def status_tip(self) -> str:
        from giter_agent.state.store import StateStore

        tip = StateStore(self.state).load().status_tip
        assert tip
        return tip

    def usb_round(self, out: Path) -> float:
        """One new spec commit from a stick, the pass, and the status bundle written."""
        self.version += 1
        old_tip = self.publisher.tip
        self.publisher.commit(spec(self.root, self.version), f"v{self.version}")
        bundle = self.publisher.bundle(out / f"v{self.version}.bundle", since=[old_tip])
        hub_has = self.status_tip()
        start = time.monotonic()
        agent = self.agent()
        try:
            report = agent.sync([bundle], source="bench")
            assert report.outcome == "applied", report.message
            assert agent.write_status_bundle(out / f"{DEVICE}.bundle", hub_has=hub_has)
        finally:
            agent.close()
        wall = time.monotonic() - start
        assert self.status_tip() != hub_has
        return wall

    def network_round(self) -> float:
        """One new spec commit on the hub: fetch, pass, status commit, push."""
        if not self.hub.exists():
            self.hub.parent.mkdir(parents=True)
            git("init", "-q", "--bare", self.hub)
            git("--git-dir", self.state / "repo.git", "push", "-q", self.hub,
                f"{self.status_tip()}:{STATUS}")
        self.version += 1
        self.publisher.commit(spec(self.root, self.version), f"v{self.version}")
        git("--git-dir", self.base / "fleet.git", "push", "-q", "-f", self.hub, "main")
        daemon = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack",
             f"--base-path={self.hub.parent}", "--listen=127.0.0.1", f"--port={self.port}",
             str(self.hub.parent)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", self.port)) == 0:
                        break
                time.sleep(0.05)
            start = time.monotonic()
            agent = self.agent()
            try:
                report = agent.sync_network()
                assert report.outcome == "applied", report.message
            finally:
                agent.close()
            wall = time.monotonic() - start
        finally:
            daemon.terminate()
            daemon.wait()
        pushed = git("--git-dir", self.hub, "rev-parse", STATUS).decode().strip()
        assert pushed == self.status_tip(), "the hub does not hold the new status tip"
        return wall


    def clone(self, work: Path) -> Device:
        """A copy of this device (state, publisher, config) in ``work``, own hub port."""
        from giter_bundle.publisher import PublisherRepo

        shutil.copytree(self.base, work, symlinks=True)
        device = Device.__new__(Device)
        device.base, device.root, device.version = work, self.root, self.version
        device.port = free_port()
        device.hub = work / "hub" / "fleet.git"
        device.config = work / "agent.toml"
        device.config.write_text(self.config.read_text().replace(
            f":{self.port}/", f":{device.port}/"))
        device.publisher = PublisherRepo(work / "fleet.git", self.publisher.key)
        return device


def measure(device: Device, runs: int) -> dict[str, float]:
    # The first syncs after the upgrade merge the packs the old release left, a bounded
    # number of objects each (history.packs.MAX_MERGE_OBJECTS), until the packs form
    # their geometric progression and a sync merges nothing more; the runs then start
    # from copies of the merged device.
    out = device.base / "stick"
    out.mkdir()
    first, syncs = 0.0, 0
    while True:
        before = device.packs()
        first += device.usb_round(out)
        syncs += 1
        if device.packs() >= before or syncs == MAX_BACKLOG_SYNCS:
            break
    print(f"  first {syncs} USB sync(s) after the upgrade, until a sync merged no more: "
          f"{first:.2f} s, packs {device.packs()}", flush=True)
    usb, net, packs_after = [], [], 0
    for i in range(runs):
        run = device.clone(device.base.parent / f"{device.base.name}-run{i}")
        usb.append(run.usb_round(out))
        net.append(run.network_round())
        packs_after = run.packs()
        print(f"  run {i}: USB sync + status bundle {usb[-1]:.2f} s, network sync + push "
              f"{net[-1]:.2f} s", flush=True)
        run.publisher.history.close()
        shutil.rmtree(run.base, ignore_errors=True)
    return {"first": first, "usb": statistics.median(usb),
            "net": statistics.median(net), "packs_after": packs_after}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--status-commits", type=int, default=20_000)
    p.add_argument("--packs", type=int, default=1_000)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="year-old-"))
    try:
        results = {}
        for name, extra in (("fresh", 0), ("year-old", args.status_commits)):
            t = time.monotonic()
            print(f"{name}: building ({extra} extra status commits)", flush=True)
            device = Device(base / name, base / f"{name}-root", extra, args.packs)
            before = device.packs()
            results[name] = measure(device, args.runs)
            print(f"{name:<9} {extra:>6} extra status commits, {before:>5} packs before, "
                  f"{results[name]['packs_after']:>3} after; first USB syncs "
                  f"{results[name]['first']:.2f} s, then USB sync + status bundle "
                  f"{results[name]['usb']:.2f} s, network sync + push "
                  f"{results[name]['net']:.2f} s (built in {time.monotonic() - t:.0f} s)",
                  flush=True)
        for what, label in (("usb", "USB sync + status bundle"),
                            ("net", "network sync + push")):
            ratio = results["year-old"][what] / results["fresh"][what]
            print(f"ratio year-old / fresh, {label}: {ratio:.2f}x (goal: within 1.5x)")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
