"""The exhaustive death-test sweep: every N of every writing syscall, every fault.

    python bench/death_sweep.py                        # every scenario, kill/ENOSPC/EIO
    python bench/death_sweep.py --scenarios first --faults kill
    python bench/death_sweep.py --budget-s 3600 --json sweep.json
    python bench/death_sweep.py --powercut ext4,btrfs   # as root: the power-cut model

For each scenario (tests/support/deathtest.py: first sync, incremental sync, a sync that
changes and prunes, loose-object packing, a network sync and push) a clean traced run
counts each writing syscall; then the sync is run once per (syscall, fault, N) with
``strace -e inject=<syscall>:<fault>:when=N`` (or the O_CREAT open hook), and the next
sync must converge. Prints every point that did not, then the totals (kill points
tried, converged) per scenario and fault: the figures docs/reliability.md records.
Needs strace; runs as any user (no root, no loop devices). With ``--powercut FS,...``
the sweep is instead over every fsync of the first, incremental and prune syncs on a
loop-mounted image that loses what was not fsynced (tests/support/powercut.py; needs root).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.deathtest import FAULTS, SCENARIOS, Case, have_strace, points


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--faults", default=",".join(FAULTS))
    p.add_argument("--sample", type=int, default=0,
                   help="a seeded sample of this many points per scenario (0: every N)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget-s", type=float, default=0,
                   help="stop starting new points after this many seconds (0: no limit)")
    p.add_argument("--json", type=Path, help="write the totals and failures here")
    p.add_argument("--powercut", metavar="FS,...",
                   help="sweep every fsync under the power-cut model on these filesystems")
    args = p.parse_args()
    if not have_strace():
        print("death_sweep: strace is not installed (Debian package strace)", file=sys.stderr)
        return 2
    faults = tuple(args.faults.split(","))
    os.environ.update(GIT_CONFIG_NOSYSTEM="1")
    tried: Counter[tuple[str, str]] = Counter()
    converged: Counter[tuple[str, str]] = Counter()
    failures: list[str] = []
    start = time.monotonic()
    stopped = False
    with tempfile.TemporaryDirectory(prefix="death-sweep-") as tmp:
        if args.powercut:
            return _powercut(args, Path(tmp), start)
        for scenario in args.scenarios.split(","):
            case = Case(Path(tmp) / scenario, scenario).setup()
            try:
                counts = case.counts()
                todo = points(counts, faults, exhaustive=args.sample == 0, sample=args.sample,
                              seed=args.seed, console=case.console_writes)
                print(f"{scenario}: {sum(counts.values())} writing calls in a clean sync "
                      f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}); "
                      f"{len(todo)} points", flush=True)
                for syscall, fault, n in todo:
                    if args.budget_s and time.monotonic() - start > args.budget_s:
                        stopped = True
                        break
                    outcome = case.fault(syscall, fault, n)
                    tried[scenario, fault] += 1
                    if outcome.converged:
                        converged[scenario, fault] += 1
                    else:
                        failures.append(outcome.line())
                        print("  " + outcome.line(), flush=True)
            finally:
                case.close()
            if stopped:
                break
    return _report(args, tried, converged, failures, start, stopped)


def _powercut(args: argparse.Namespace, tmp: Path, start: float) -> int:
    from support.powercut import Disk, cut_at, unavailable

    tried: Counter[tuple[str, str]] = Counter()
    converged: Counter[tuple[str, str]] = Counter()
    failures: list[str] = []
    stopped = False
    for fs in args.powercut.split(","):
        why = unavailable(fs)
        if why:
            print(f"{fs}: skipped: {why}", flush=True)
            continue
        for scenario in ("first", "incremental", "prune"):
            work = tmp / f"{fs}-{scenario}"
            work.mkdir()
            disk = Disk(work, work / "mnt", fs).make()
            case = Case(work / "case", scenario, live=disk.mountpoint).setup()
            try:
                total = case.counts()["fsync"]
                print(f"{fs} {scenario}: {total} fsyncs in a clean sync", flush=True)
                for n in [*range(1, total + 1), None]:
                    if args.budget_s and time.monotonic() - start > args.budget_s:
                        stopped = True
                        break
                    outcome = cut_at(case, disk, n)
                    tried[scenario, f"cut@{fs}"] += 1
                    if outcome.converged:
                        converged[scenario, f"cut@{fs}"] += 1
                    else:
                        failures.append(f"{fs}: {outcome.line()}")
                        print(f"  {fs}: {outcome.line()}", flush=True)
            finally:
                case.close()
                disk.close()
            if stopped:
                break
        if stopped:
            break
    return _report(args, tried, converged, failures, start, stopped)


def _report(args: argparse.Namespace, tried: Counter[tuple[str, str]],
            converged: Counter[tuple[str, str]], failures: list[str], start: float,
            stopped: bool) -> int:
    elapsed = time.monotonic() - start
    print(f"\n{'scenario':<12} {'fault':<11} {'tried':>6} {'converged':>10}")
    for (scenario, fault), n in sorted(tried.items()):
        print(f"{scenario:<12} {fault:<11} {n:>6} {converged[scenario, fault]:>10}")
    total, ok = sum(tried.values()), sum(converged.values())
    print(f"{'total':<24} {total:>6} {ok:>10}   ({elapsed:.0f} s"
          f"{', stopped by --budget-s' if stopped else ''})")
    if args.json:
        args.json.write_text(json.dumps({
            "tried": {f"{s}/{f}": n for (s, f), n in sorted(tried.items())},
            "converged": {f"{s}/{f}": n for (s, f), n in sorted(converged.items())},
            "failures": failures, "elapsed_s": round(elapsed), "stopped": stopped,
        }, indent=2) + "\n")
    return 0 if ok == total else 1


if __name__ == "__main__":
    sys.exit(main())
