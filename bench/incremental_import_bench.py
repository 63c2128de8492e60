"""Benchmark: the time of the common import, an incremental bundle of small objects.

A repository of ``--commits`` commits (default 1,000), each changing 3 of 40 files of
4 KiB, is imported whole once; then each round imports a bundle of ``--new`` more
commits (default 1) on top, the way a sync does (``History.quarantine`` + ``promote``
+ the ref move, minus signatures), into a fresh copy of the device's repository. It
prints the median and best time of the incremental import, and of ``git fetch`` of the
same bundle into a copy of a git repository holding the same history (the reference),
and the ratio. Nothing here is large: this is what resolving large objects on disk
must not slow down.

Run from the repository root:
  python3 bench/incremental_import_bench.py [--commits 1000] [--new 1] [--rounds 9]
The numbers go into docs/performance.md, "Artifacts".
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path


def git(*args: str | Path, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *map(str, args)], cwd=cwd, check=True,
                          capture_output=True).stdout.decode().strip()


def build(root: Path, commits: int, rng: random.Random) -> None:
    """``commits`` commits of 40 files of 4 KiB, 3 rewritten each time, via fast-import."""
    git("init", "-q", "-b", "main", root)
    lines: list[bytes] = []
    for i in range(commits):
        msg = f"c{i}".encode()
        lines.append(b"commit refs/heads/main\ncommitter b <b@b> %d +0000\n" % (1700000000 + i))
        lines.append(b"data %d\n%s\n" % (len(msg), msg))
        for f in (range(40) if i == 0 else rng.sample(range(40), 3)):
            data = "".join(rng.choice("abcdefgh \n") for _ in range(4096)).encode()
            lines.append(b"M 100644 inline res/f%02d.yaml\ndata %d\n%s\n" % (f, len(data), data))
    subprocess.run(["git", "fast-import", "--quiet"], cwd=root, input=b"".join(lines),
                   check=True)
    git("repack", "-adq", cwd=root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=1000)
    parser.add_argument("--new", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()

    from giter_agent.history.store import Caps, History

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, {git('--version')}")
    with tempfile.TemporaryDirectory(prefix="incremental-bench-") as tmp:
        work, rng = Path(tmp), random.Random(3)
        src = work / "src"
        build(src, args.commits + args.new, rng)
        git("branch", "old", f"main~{args.new}", cwd=src)
        git("bundle", "create", "-q", work / "old.bundle", "old", cwd=src)
        git("bundle", "create", "-q", work / "new.bundle", "old..main", cwd=src)
        device, reference = work / "device.git", work / "reference.git"
        with History(device, Caps()) as history, \
                history.quarantine(work / "old.bundle") as q:
            q.promote()
            history.set_ref(b"refs/heads/main", None, q.refs[b"refs/heads/old"])
        git("init", "-q", "--bare", reference)
        git("-C", reference, "fetch", "-q", work / "old.bundle", "old:main")
        ours, theirs = [], []
        for _ in range(args.rounds):  # interleaved: a busy machine slows both alike
            shutil.copytree(device, work / "d.git")
            start = time.perf_counter()
            with History(work / "d.git", Caps()) as history, \
                    history.quarantine(work / "new.bundle") as q:
                q.promote()
                history.set_ref(b"refs/heads/main", history.ref(b"refs/heads/main"),
                                q.refs[b"refs/heads/main"])
            ours.append(time.perf_counter() - start)
            shutil.rmtree(work / "d.git")
            shutil.copytree(reference, work / "r.git")
            start = time.perf_counter()
            git("-C", work / "r.git", "fetch", "-q", work / "new.bundle", "main:main")
            theirs.append(time.perf_counter() - start)
            shutil.rmtree(work / "r.git")
        size = (work / "new.bundle").stat().st_size
        print(f"{args.new} new commit(s) on {args.commits}: bundle {size} bytes, "
              f"{args.rounds} rounds")
        print(f"  giter import    median {statistics.median(ours) * 1e3:7.1f} ms   "
              f"best {min(ours) * 1e3:7.1f} ms")
        print(f"  git fetch       median {statistics.median(theirs) * 1e3:7.1f} ms   "
              f"best {min(theirs) * 1e3:7.1f} ms")
        print(f"  ours / git (median) x{statistics.median(ours) / statistics.median(theirs):.2f}")


if __name__ == "__main__":
    main()
