"""Peak memory of importing a stacked-delta bundle: bounded indexer against dulwich's.

Run by hand: ``python3 bench/delta_memory_bench.py [--mib 32] [--levels 24]``. Builds
(tests/support/packcraft.py) an unsigned bundle of a few kilobytes whose deltas stack ``--mib``
MiB results ``--levels`` deep, each level with a pending sibling, and imports it in a
child process twice: through ``History.quarantine`` as shipped, and with the pack
handed to dulwich's own ``add_thin_pack`` instead (the reference). Each child reports
the growth of its peak RSS (getrusage) over a warmed-up baseline and its CPU time. The
figures go into docs/performance.md, "Delta amplification".
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from support import packcraft
    import giter_agent.history.pack_index as pack_index
    from giter_agent.history.store import Caps, History
    tmp = Path({tmp!r})
    if {reference!r}:
        pack_index.add_pack = (lambda store, read_all, read_some, budget, cache_bytes,
                               max_object_bytes=None:
                               store.add_thin_pack(read_all, read_some))
    (tmp / "warm.bundle").write_bytes(packcraft.stacked(4096, 1).bundle)
    crafted = packcraft.{shape}({mib} << 20, {levels})
    (tmp / "big.bundle").write_bytes(crafted.bundle)
    size = len(crafted.bundle)
    del crafted
    history = History(tmp / "repo.git", Caps(max_object_bytes={mib} << 20,
                                             time_budget_s=86400))
    with history.quarantine(tmp / "warm.bundle"):
        pass
    before = resource.getrusage(resource.RUSAGE_SELF)
    with history.quarantine(tmp / "big.bundle") as q:
        q.promote()
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({{"bundle_bytes": size,
                      "rss_growth_mib": (after.ru_maxrss - before.ru_maxrss) / 1024,
                      "cpu_s": after.ru_utime + after.ru_stime
                               - before.ru_utime - before.ru_stime}}))
""")


def run_child(shape: str, mib: int, levels: int, reference: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        script = CHILD.format(tests=str(TESTS), tmp=tmp, reference=reference, shape=shape,
                              mib=mib, levels=levels)
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1]}
    return json.loads(proc.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=32, help="size of each delta result")
    parser.add_argument("--levels", type=int, default=24)
    parser.add_argument("--shape", choices=("stacked", "chain"), default="stacked")
    args = parser.parse_args()
    print(f"{args.shape}: {args.levels} levels of {args.mib} MiB results "
          f"(object cap {args.mib} MiB)")
    for label, reference in (("dulwich add_thin_pack (reference)", True),
                             ("bounded indexer (shipped)", False)):
        out = run_child(args.shape, args.mib, args.levels, reference)
        if "error" in out:
            print(f"{label:36} failed: {out['error']}")
            continue
        print(f"{label:36} bundle {out['bundle_bytes']:>7} B  peak RSS +"
              f"{out['rss_growth_mib']:7.1f} MiB = {out['rss_growth_mib'] / args.mib:5.2f} x cap"
              f"  cpu {out['cpu_s']:6.1f} s")


if __name__ == "__main__":
    main()
