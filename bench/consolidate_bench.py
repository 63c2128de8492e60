"""Benchmark: peak memory and time of consolidating packs, against ``git repack -a -d``.

Two stores, each built with git (a pack per commit, the way a device gains them):

- **artifact**: a pack holding one ``artifacts/app.bin`` of random bytes (default
  256 MiB) plus ``--small`` (default 20) packs of one small commit each. The
  consolidation merges them all, the artifact's pack included.
- **small packs**: ``--many`` (default 300) packs of one small commit each: the common
  case on a device (one pack per status commit), where the time matters; timed over
  ``--rounds`` interleaved rounds on fresh copies, the median shown.

Each store is copied and consolidated in a child process by ``History.consolidate``
(this checkout), by the same call of an earlier checkout given with ``--before DIR``
(its ``agent/`` folder is imported as ``giter_agent``; e.g. a ``git worktree`` of the
commit before the change), and by ``git repack -a -d`` (git copies pack entries
verbatim too). *Peak RSS* is ``ru_maxrss`` of the child, *peak anon* is sampled
anonymous memory (see ``bundle_import_bench.measure``); the time is the consolidation's
own (measured inside the child, the interpreter's start-up left out) and git's wall
time. Ratios are against git and against the earlier checkout in the same run.

Run from the repository root:
python3 bench/consolidate_bench.py [--mib 256] [--small 20] [--many 300] [--rounds 5]
[--before DIR]
The numbers go into docs/performance.md, "Artifacts".
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bundle_import_bench import Measured, measure

MiB = 2**20
GIT_ID = ("-c", "user.name=b", "-c", "user.email=b@b", "-c", "gc.auto=0")


def git(*args: str | Path, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *map(str, args)], cwd=cwd, check=True,
                          capture_output=True).stdout.decode().strip()


def make_store(root: Path, mib: int, small: int) -> Path:
    """A repository with an artifact pack of ``mib`` MiB (none for 0) and ``small``
    packs of one small commit each; returns its git directory."""
    git("init", "-q", "-b", "main", root)
    if mib:
        (root / "artifacts").mkdir()
        with (root / "artifacts/app.bin").open("wb") as fh:
            for _ in range(mib):
                fh.write(os.urandom(MiB))
        git("add", "-A", cwd=root)
        git(*GIT_ID, "commit", "-qm", "artifact", cwd=root)
        git("repack", "-q", "-a", "-d", cwd=root)
    (root / "status").mkdir()
    for i in range(small):
        (root / "status" / "report.txt").write_text(f"report {i}\n" * 50)
        git("add", "-A", cwd=root)
        git(*GIT_ID, "commit", "-qm", f"status {i}", cwd=root)
        git("repack", "-q", "-d", cwd=root)
    return root / ".git"


def child(repo: str, timing: str) -> None:
    import giter_agent
    from giter_agent.history.store import History

    start = time.monotonic()
    with History(Path(repo)) as history:
        result = history.consolidate()
    elapsed = time.monotonic() - start
    Path(timing).write_text(f"{elapsed}\n{result.merged_packs}\n{giter_agent.__file__}\n")


def objects(repo: Path) -> str:
    return git("--git-dir", repo, "cat-file", "--batch-all-objects", "--batch-check")


def ours(repo: Path, work: Path, label: str, code: Path | None) -> tuple[Measured, float]:
    """Consolidate ``repo`` in a child running this checkout, or the one at ``code``."""
    timing = work / f"{label}.time"
    argv = [sys.executable, __file__, "--child", str(repo), str(timing)]
    if code is not None:  # its agent/ folder first on the path, as giter_agent
        shim = work / f"{label}-code"
        shim.mkdir()
        (shim / "giter_agent").symlink_to(code.resolve() / "agent")
        argv = ["env", f"PYTHONPATH={shim}", *argv]
    before = objects(repo)
    measured = measure(argv)
    seconds, merged, module = timing.read_text().split("\n")[:3]
    expected = (code or Path(__file__).resolve().parent.parent).resolve() / "agent"
    assert Path(module).resolve().parent == expected, f"{label} ran {module}"
    assert objects(repo) == before, f"{label}: the objects changed"
    assert int(merged) >= 2, f"{label}: nothing merged"
    return measured, float(seconds)


def row(label: str, m: Measured, seconds: float) -> str:
    return (f"  {label:<36} peak RSS {m.peak_rss / MiB:7.1f} MiB   peak anon "
            f"{m.peak_anon / MiB:7.1f} MiB   {seconds:7.3f} s")


def scenario(name: str, mib: int, small: int, work: Path, before: Path | None) -> None:
    src = make_store(work / name, mib, small)
    packs = len(list((src / "objects/pack").glob("*.pack")))
    print(f"== {name}: {packs} packs"
          f"{f', one holding a {mib} MiB artifact' if mib else ''}")
    copies = {}
    for label in ("after", "before", "git"):
        copies[label] = work / f"{name}-{label}.git"
        shutil.copytree(src, copies[label], symlinks=True)
    after, after_s = ours(copies["after"], work, f"{name}-after", None)
    print(row("History.consolidate (this checkout)", after, after_s))
    if before is not None:
        old, old_s = ours(copies["before"], work, f"{name}-before", before)
        print(row("History.consolidate (--before)", old, old_s))
    theirs = measure(["git", "--git-dir", str(copies["git"]), "repack", "-q", "-a", "-d"])
    print(row("git repack -a -d (reference)", theirs, theirs.seconds))
    print(f"  ours / git: peak RSS x{after.peak_rss / theirs.peak_rss:.2f}, "
          f"time x{after_s / theirs.seconds:.2f}")
    if before is not None:
        print(f"  after / before: peak RSS x{after.peak_rss / old.peak_rss:.2f}, peak anon "
              f"x{after.peak_anon / old.peak_anon:.2f}, time x{after_s / old_s:.2f}")


def many(small: int, rounds: int, work: Path, before: Path | None) -> None:
    """The common case, timed over ``rounds``: each round consolidates fresh copies of
    the same store with this checkout, the earlier one and git, interleaved."""
    src = make_store(work / "small-packs", 0, small)
    print(f"== {small} small packs, {rounds} rounds (median)")
    times: dict[str, list[float]] = {"after": [], "before": [], "git": []}
    for n in range(rounds):
        for label in ("after", "before", "git"):
            if label == "before" and before is None:
                continue
            repo = work / f"small-{label}-{n}.git"
            shutil.copytree(src, repo, symlinks=True)
            if label == "git":
                times[label].append(measure(["git", "--git-dir", str(repo), "repack", "-q",
                                             "-a", "-d"]).seconds)
            else:
                code = before if label == "before" else None
                times[label].append(ours(repo, work, f"small-{label}-{n}", code)[1])
            shutil.rmtree(repo)
    mid = {k: statistics.median(v) for k, v in times.items() if v}
    print(f"  History.consolidate (this checkout)  {mid['after']:.3f} s")
    if before is not None:
        print(f"  History.consolidate (--before)       {mid['before']:.3f} s")
    print(f"  git repack -a -d (reference)         {mid['git']:.3f} s")
    print(f"  ours / git: time x{mid['after'] / mid['git']:.2f}")
    if before is not None:
        print(f"  after / before: time x{mid['after'] / mid['before']:.2f}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:4])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="artifact size (0: none)")
    parser.add_argument("--small", type=int, default=20,
                        help="small packs beside the artifact pack")
    parser.add_argument("--many", type=int, default=300,
                        help="small packs of the time scenario (0: skip it)")
    parser.add_argument("--before", type=Path, default=None, metavar="DIR",
                        help="a checkout of the earlier code to compare with")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of the time scenario (the median is shown)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="consolidate-bench-") as tmp:
        work = Path(tmp)
        if args.mib:
            scenario("artifact", args.mib, args.small, work, args.before)
        if args.many:
            many(args.many, args.rounds, work, args.before)


if __name__ == "__main__":
    main()
