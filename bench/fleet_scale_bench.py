"""How the publisher's tools scale with the fleet: ``status``, ``create`` and ``import``.

For each fleet size it makes a synthetic fleet (``bench/synthetic_fleet.py``: every
device enrolled and signing its own status commits) and runs, each as its own process
as an operator would, timed by wall clock and measured for peak memory (``wait4``'s
``ru_maxrss`` of that process alone):

- ``giter-bundle status --json``: the table of N devices from N status branches;
- ``giter-bundle create --output``: the bundle for every enrolled device;
- ``giter-bundle import STICK``: N status bundles (one per device, each with its
  ``--reports`` status commits) verified and taken in by a hub that has none of them.

It prints one line per size and command (for ``import``, the packs the hub holds after
it), and the CPU time per device relative to the smallest size measured in the same
run (1.00 = perfectly linear; CPU rather than wall time, so that other load on the
machine does not move the ratio).

    python3 bench/fleet_scale_bench.py                          # 100, 1000, 10000
    python3 bench/fleet_scale_bench.py --sizes 100,1000 --import-max 0

Results: docs/performance.md, "A fleet of 10,000 at the publisher".
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "bench"))


# Runs giter-bundle and, on the way out, prints the process's own peak resident memory
# (VmHWM belongs to the address space exec made; ru_maxrss would include the bench's
# own, inherited across fork and exec).
WRAPPER = """
import atexit, sys
def peak():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            sys.stderr.write('PEAK ' + line.split()[1] + '\\n')
atexit.register(peak)
from giter_bundle.cli import main
sys.exit(main(sys.argv[1:]))
"""


def measured(argv: list[str]) -> tuple[float, float, float, int]:
    """(wall s, CPU s, peak RSS MiB, exit code) of one ``giter-bundle ARGV...`` process."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{argv} failed: {err.decode(errors='replace')}")
    peaks = [int(line.split()[1]) for line in err.decode().splitlines()
             if line.startswith("PEAK ")]
    return wall, usage.ru_utime + usage.ru_stime, peaks[-1] / 1024, proc.returncode


def main() -> int:
    from synthetic_fleet import make_fleet

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="100,1000,10000")
    p.add_argument("--reports", type=int, default=3, help="status commits per device")
    p.add_argument("--spec-commits", type=int, default=20)
    p.add_argument("--import-max", type=int, default=1000,
                   help="measure import only up to this many devices (default 1000)")
    p.add_argument("--keep", type=Path, help="keep the fleets under this folder")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    tool: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="giter-scale-", dir=args.keep))
    per_device: dict[str, float] = {}
    print(f"{'devices':>8} {'command':<8} {'wall s':>8} {'cpu s':>8} {'peak MiB':>9} "
          f"{'cpu ms/dev':>10} {'vs smallest':>12}")
    try:
        for n in sizes:
            t = time.monotonic()
            made = make_fleet(base / str(n), n, reports=args.reports,
                              spec_commits=args.spec_commits, quiet=True, oddities=False)
            fleet = made["fleet"]
            made_s = time.monotonic() - t
            runs = {"status": [*tool, "-C", str(fleet), "status", "--json"],
                    "create": [*tool, "-C", str(fleet), "create", "--no-lint", "-q",
                               "--output", str(base / f"{n}.bundle")]}
            if n <= args.import_max:
                # The hub as it was before any device reported, and a stick with N bundles.
                hub = base / f"{n}-hub"
                shutil.copytree(fleet, hub, symlinks=True)
                for ref in (hub / ".git/refs/heads/status").iterdir():
                    ref.unlink()
                stick = base / f"{n}-stick"
                outbox = stick / "giter/outbox"
                outbox.mkdir(parents=True)
                from giter_agent.history.store import History

                with History(fleet / ".git") as history:
                    tip = history.ref(b"refs/heads/main")
                    assert tip is not None
                    for d, status_tip in made["tips"].items():
                        history.write_bundle(outbox / f"{d}.bundle",
                                             {f"refs/heads/status/{d}".encode(): status_tip},
                                             exclude=[tip])
                runs["import"] = [*tool, "-C", str(hub), "import", str(stick), "--json"]
            print(f"{n:>8} (fleet made in {made_s:.0f} s)", flush=True)
            for name, argv in runs.items():
                wall, cpu, rss, _code = measured(argv)
                # CPU, not wall time: the ratio must not move with other load on the box.
                ms = cpu / n * 1000
                ref = per_device.setdefault(name, ms)
                packs = ""
                if name == "import":  # consolidated as it goes: logarithmic, not one per bundle
                    packs = f"  ({len(list((hub / '.git/objects/pack').glob('*.idx')))} packs)"
                print(f"{n:>8} {name:<8} {wall:>8.2f} {cpu:>8.2f} {rss:>9.1f} {ms:>10.2f} "
                      f"{ms / ref:>12.2f}{packs}", flush=True)
            if args.keep is None:
                shutil.rmtree(base / str(n), ignore_errors=True)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
