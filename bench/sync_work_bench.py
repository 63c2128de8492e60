"""The incremental sync's own work, apart from its imports: two checkouts side by side.

``bench/incremental_sync_bench.py`` measures the whole process, where the imports of the
sync path are about three quarters of the CPU and vary by several milliseconds from run
to run: a change of a few milliseconds in what the sync does once everything is
imported does not show there. This script measures that part alone, for this checkout
and another one (``--against``, e.g. a ``git worktree`` of main), on the same device:

- the device of ``incremental_sync_bench``: 1,000 signed spec commits (one File),
  a stick with 10 new ones;
- each checkout laid out as a device installs it (``installed_layout.layout``), with
  its own state, synced once to the 1,000 (untimed);
- per round, interleaved, from the same saved state: the whole ``giter-agent sync
  --bundle`` process (CPU of the child), and the same sync run in a process that first
  imported every module a sync imports (listed by ``python -X importtime`` of a first
  run): only ``main()`` is timed (``time.process_time``).

Prints the medians, and what one sync of each did: fsyncs, packs renamed into the
store's ``objects/pack/`` (the bundle's, promoted, and those the sync wrote), pack
indexes read, pack-folder listings (counted in the in-process run).

    python3 bench/sync_work_bench.py --against ../main            # 21 rounds
    python3 bench/sync_work_bench.py --against ../main --rounds 41

Results: docs/performance.md, "The sync's own work, once imported".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import installed_layout  # noqa: E402 - beside this script
from incremental_sync_bench import history_bundles  # noqa: E402

# Run by the laid-out interpreter: import what a sync imports, then time main() alone.
RUNNER = r'''
import json, os, sys, time
private, modules, out = sys.argv[1:4]
sys.path.insert(0, private)
for name in open(modules).read().split():
    try:
        __import__(name)
    except Exception:
        pass
import dulwich.pack
counts = {"fsync": 0, "packs": 0, "indexes": 0, "listings": 0}
fsync, replace, listdir, load = os.fsync, os.replace, os.listdir, dulwich.pack.load_pack_index
def counted_fsync(fd):
    counts["fsync"] += 1
    return fsync(fd)
def counted_replace(src, dst, **kw):
    if str(dst).endswith(".pack") and os.sep + "objects" + os.sep + "pack" in str(dst):
        counts["packs"] += 1
    return replace(src, dst, **kw)
def counted_listdir(path="."):
    if str(path).endswith(os.sep + "pack"):
        counts["listings"] += 1
    return listdir(path)
def counted_load(path, *a, **k):
    counts["indexes"] += 1
    return load(path, *a, **k)
os.fsync, os.replace, os.listdir = counted_fsync, counted_replace, counted_listdir
dulwich.pack.load_pack_index = counted_load
from giter_agent.cli.main import main
start = time.process_time()
code = main(sys.argv[4:])
used = time.process_time() - start
with open(out, "w") as fh:
    json.dump({"cpu": used, "code": code, **counts}, fh)
'''


class Device:
    """One checkout laid out as installed, with its own state synced to the history."""

    def __init__(self, work: Path, repo: Path, signers: Path, target: Path) -> None:
        self.dir = work
        work.mkdir()
        entry, _ = installed_layout.layout(work, repo=repo)
        self.python, self.private = entry[0], str(work / "private")
        self.env = installed_layout.env(work)
        config = installed_layout.device_config(work, signers, target.parent)
        self.argv = ["-c", str(config), "sync", "--bundle"]
        self.entry = entry
        self.target = target

    def reset(self, before: bytes) -> None:
        shutil.rmtree(self.dir / "state")
        shutil.copytree(self.dir / "state0", self.dir / "state", symlinks=True)
        self.target.write_bytes(before)

    def whole(self, bundle: Path) -> float:
        """CPU seconds of one ``giter-agent sync --bundle`` process."""
        proc = subprocess.Popen([*self.entry, *self.argv, str(bundle)], env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        err = proc.stderr.read().decode() if proc.stderr else ""
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{self.dir.name}: the sync failed: {err.strip()[-500:]}")
        return usage.ru_utime + usage.ru_stime

    def modules(self, bundle: Path, before: bytes) -> Path:
        """The modules a sync imports, in import order (``-X importtime``)."""
        self.reset(before)
        proc = subprocess.run([self.python, "-X", "importtime", *self.entry[1:], *self.argv,
                               str(bundle)], env=self.env, capture_output=True, text=True,
                              check=True)
        names = re.findall(r"import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", proc.stderr)
        listing = self.dir / "modules.txt"
        listing.write_text("\n".join(n for n in names
                                     if not n.startswith(("encodings", "_frozen", "site"))))
        return listing

    def imported(self, runner: Path, modules: Path, bundle: Path) -> dict[str, float]:
        """The sync run after its imports: ``main()``'s CPU seconds and what it did."""
        out = self.dir / "run.json"
        subprocess.run([self.python, str(runner), self.private, str(modules), str(out),
                        *self.argv, str(bundle)], env=self.env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result: dict[str, float] = json.loads(out.read_text())
        if result["code"] != 0:
            raise SystemExit(f"{self.dir.name}: the in-process sync failed")
        return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--against", type=Path, required=True,
                   help="the other checkout (a git worktree of main, say)")
    p.add_argument("--history", type=int, default=1000)
    p.add_argument("--new", type=int, default=10)
    p.add_argument("--rounds", type=int, default=21)
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sync-work-"))
    try:
        fleet = history_bundles(work, args.history, args.new)
        signers, target = fleet.signers, fleet.target
        runner = work / "runner.py"
        runner.write_text(RUNNER)
        devices = {"this checkout": Device(work / "this", REPO_ROOT, signers, target),
                   "--against": Device(work / "other", args.against.resolve(), signers,
                                       target)}
        before = b""
        modules = {}
        for device in devices.values():
            target.unlink(missing_ok=True)
            device.whole(work / "old.bundle")  # the device at the 1,000 commits
            shutil.copytree(device.dir / "state", device.dir / "state0", symlinks=True)
            before = target.read_bytes()
        for name, device in devices.items():
            modules[name] = device.modules(work / "new.bundle", before)
        whole: dict[str, list[float]] = {name: [] for name in devices}
        alone: dict[str, list[float]] = {name: [] for name in devices}
        counts: dict[str, dict[str, float]] = {}
        expected = f"version {args.history + args.new - 1}\n".encode()
        for _ in range(args.rounds):
            for name, device in devices.items():
                device.reset(before)
                whole[name].append(device.whole(work / "new.bundle"))
                if target.read_bytes() != expected:
                    raise SystemExit(f"{name}: the sync did not apply the new spec")
                device.reset(before)
                counts[name] = device.imported(runner, modules[name], work / "new.bundle")
                alone[name].append(counts[name]["cpu"])
        print(f"incremental sync, {args.new} new commits on {args.history}: {args.rounds} "
              "interleaved rounds (median CPU)")
        for name in devices:
            c = counts[name]
            print(f"  {name:<14} once imported {1000 * statistics.median(alone[name]):6.1f} ms"
                  f"   whole process {1000 * statistics.median(whole[name]):6.1f} ms"
                  f"   fsyncs {c['fsync']:.0f}, packs into objects/pack {c['packs']:.0f},"
                  f" indexes read {c['indexes']:.0f}, pack folders listed {c['listings']:.0f}")
        mine, theirs = (statistics.median(alone[n]) for n in devices)
        print(f"this checkout / --against, once imported: x{mine / theirs:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
