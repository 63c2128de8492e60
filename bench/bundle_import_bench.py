"""Benchmark: peak memory and time to import a git bundle, ours against ``git fetch``.

Builds a repository with git (1,000 commits by default, each changing a few
few-KB files), bundles it with ``git bundle create``, then imports that bundle
  - with ``History.quarantine`` + ``promote`` (the agent's path), in a child process,
  - with ``git fetch`` into an empty bare repository (the reference),
and reports for each child two peaks:
  - peak RSS from ``os.wait4`` (the kernel's ``ru_maxrss``, covering the child and every
    descendant it waited for, e.g. git's index-pack). It counts file pages a process
    has mapped, and both dulwich and git mmap the pack they index, so it grows with
    the pack even though those pages are page cache the kernel can drop at will;
  - peak anonymous RSS (heap, the memory that can run a board out of RAM), sampled
    every 5 ms from /proc over the child and its descendants.
A second, larger scenario (bigger blobs that do not delta) shows that the anonymous
peak does not grow with the bundle: the pack streams through disk.

Run from the repository root:  python3 bench/bundle_import_bench.py
Used by hand and for docs/performance.md; nothing imports it.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024
WORDS = ("pin", "led", "relay", "state", "on", "off", "blink", "interval", "sensor",
         "threshold", "deadband", "path", "mode", "content", "group", "device")


@dataclass(frozen=True)
class Scenario:
    name: str
    commits: int
    files: int
    blob_bytes: int
    changed_per_commit: int
    rewrite: bool  # True: changed files get fresh content (no deltas); False: small edits


def _text(rng: random.Random, size: int) -> list[str]:
    lines, total = [], 0
    while total < size:
        line = " ".join(rng.choice(WORDS) for _ in range(8)) + f" {rng.getrandbits(32):08x}\n"
        lines.append(line)
        total += len(line)
    return lines


def _random_text(rng: random.Random, size: int) -> list[str]:
    # Hex of random bits: compresses about 2:1 and shares nothing with earlier versions.
    return [rng.randbytes(32).hex() + "\n" for _ in range(size // 65)]


def build_repo(root: Path, sc: Scenario, seed: int = 1) -> None:
    """Create ``root`` with ``sc.commits`` commits on main, through git fast-import."""
    rng = random.Random(seed)
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    paths = [f"devices/dev-{i % 10}/res-{i:03d}.yaml" for i in range(sc.files)]
    contents = {p: _text(rng, sc.blob_bytes) for p in paths}
    proc = subprocess.Popen(["git", "-C", str(root), "fast-import", "--quiet"],
                            stdin=subprocess.PIPE)
    assert proc.stdin is not None
    out = proc.stdin

    def data(payload: bytes) -> None:
        out.write(b"data %d\n" % len(payload) + payload + b"\n")

    for n in range(1, sc.commits + 1):
        changed = paths if n == 1 else rng.sample(paths, sc.changed_per_commit)
        out.write(b"commit refs/heads/main\nmark :%d\n" % n)
        out.write(b"committer Bench <bench@example.invalid> %d +0000\n" % (1_700_000_000 + n))
        data(f"change {n}\n".encode())
        if n > 1:
            out.write(b"from :%d\n" % (n - 1))
        for p in changed:
            if n > 1:
                if sc.rewrite:
                    contents[p] = _random_text(rng, sc.blob_bytes)
                else:
                    lines = contents[p]
                    for _ in range(3):
                        lines[rng.randrange(len(lines))] = _text(rng, 1)[0]
            out.write(f"M 100644 inline {p}\n".encode())
            data("".join(contents[p]).encode())
    out.close()
    if proc.wait() != 0:
        raise SystemExit("git fast-import failed")


def _anon_bytes(pid: int) -> int:
    """RssAnon of ``pid`` plus all its live descendants (0 for those already gone)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(status.split("RssAnon:")[1].split()[0]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, IndexError, ValueError):
            continue
    return total


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss: int  # bytes, ru_maxrss of the child and its waited-for descendants
    peak_anon: int  # bytes, sampled


def measure(argv: list[str]) -> Measured:
    """Run ``argv`` and measure its wall time, peak RSS and sampled peak anonymous RSS."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    peak_anon = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_anon
        while not done.is_set():
            peak_anon = max(peak_anon, _anon_bytes(proc.pid))
            done.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - start
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed with {proc.returncode}")
    return Measured(elapsed, usage.ru_maxrss * 1024, peak_anon)  # Linux reports KiB


def child_import(history_dir: str, bundle: str) -> None:
    """What the agent does with a bundle, minus trust: quarantine, promote, move the ref."""
    from giter_agent.history.store import History

    with History(Path(history_dir)) as history, history.quarantine(Path(bundle)) as q:
        q.promote()
        for name, sha in q.refs.items():
            history.set_ref(name, history.ref(name), sha)


def run_scenario(sc: Scenario, work: Path) -> dict[str, float]:
    repo = work / f"{sc.name}-src"
    build_repo(repo, sc)
    bundle = work / f"{sc.name}.bundle"
    subprocess.run(["git", "-C", str(repo), "bundle", "create", "-q", str(bundle), "main"],
                   check=True)
    tip = subprocess.run(["git", "-C", str(repo), "rev-parse", "main"], check=True,
                         capture_output=True, text=True).stdout.strip()
    counts = dict(line.split(": ") for line in subprocess.run(
        ["git", "-C", str(repo), "count-objects", "-v"], check=True, capture_output=True,
        text=True).stdout.splitlines())
    objects = int(counts["count"]) + int(counts["in-pack"])

    # The floor sleeps a little so the sampler sees it after the imports are done.
    floor = measure([sys.executable, "-c",
                     "import giter_agent.history.store, time; time.sleep(0.2)"])
    ours_dir = work / f"{sc.name}-ours"
    ours = measure([sys.executable, __file__, "--child-import", str(ours_dir), str(bundle)])
    got = (ours_dir / "refs" / "heads" / "main").read_text().strip()
    assert got == tip, f"import ended at {got}, expected {tip}"
    git_dir = work / f"{sc.name}-git"
    subprocess.run(["git", "init", "-q", "--bare", str(git_dir)], check=True)
    git = measure(["git", "-C", str(git_dir), "fetch", "-q", str(bundle),
                   "refs/heads/main:refs/heads/main"])

    size = bundle.stat().st_size
    print(f"\n== {sc.name}: {sc.commits} commits, {sc.files} files of ~{sc.blob_bytes // 1024}"
          f" KiB, {sc.changed_per_commit} changed per commit"
          f" ({'rewritten' if sc.rewrite else 'small edits'})")
    print(f"bundle: {size / MIB:.1f} MiB, {objects} objects")
    print(f"{'':24}{'peak RSS':>12}{'peak anon':>13}{'time':>10}")
    for label, m in (("python + dulwich floor", floor), ("giter History import", ours),
                     ("git fetch (reference)", git)):
        print(f"{label:24}{m.peak_rss / MIB:>8.1f} MiB{m.peak_anon / MIB:>9.1f} MiB"
              f"{m.seconds:>8.2f} s")
    print(f"ours / git: peak RSS x{ours.peak_rss / git.peak_rss:.1f},"
          f" peak anon x{ours.peak_anon / git.peak_anon:.1f},"
          f" time x{ours.seconds / git.seconds:.1f}")
    print(f"ours above the python floor: {(ours.peak_anon - floor.peak_anon) / MIB:.1f} MiB"
          f" anonymous, {(ours.peak_rss - floor.peak_rss) / MIB:.1f} MiB RSS,"
          f" for a {size / MIB:.1f} MiB bundle")


SCENARIOS = {
    "fleet": Scenario("fleet", commits=1000, files=40, blob_bytes=4096, changed_per_commit=3,
                      rewrite=False),
    "heavy": Scenario("heavy", commits=1000, files=40, blob_bytes=32 * 1024,
                      changed_per_commit=2, rewrite=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child-import", nargs=2, metavar=("HISTORY", "BUNDLE"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if args.child_import:
        child_import(*args.child_import)
        return
    work = Path(tempfile.mkdtemp(prefix="giter-bench-"))
    try:
        names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
        for name in names:
            run_scenario(SCENARIOS[name], work)
    finally:
        if args.keep:
            print(f"\nwork directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
