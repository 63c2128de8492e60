"""Benchmark: peak memory of taking in and laying down one artifact, against git.

For each size (default 1, 64 and 256 MiB) a repository gets ``artifacts/app.bin`` of
random bytes (what a compressed firmware or tarball looks like), is bundled with
``git bundle create``, and then, each in a child process:

- **import**: ``History.quarantine`` + ``promote`` + the ref move (the agent's path,
  minus signatures) against ``git fetch`` of the same bundle into a bare repository;
- **apply**: the artifact laid down at a target through ``history.artifacts`` and
  ``core.durable.atomic_writer`` (what the ``File`` kind does: stream, fsync, rename)
  against ``git --work-tree=W checkout main -- artifacts/app.bin`` from the same
  bare repository (git's own way to write one file of a commit).

With ``--delta`` a second version of the largest size, 1 % changed, is committed on
top and the whole history bundled, so git stores one version as a delta of the other;
the apply then lays the *deltified* one down (``copy_blob`` resolves the chain through
temp files on disk). Then the *update*: a device holding the first version imports the
thin bundle ``v1..main``, whose artifact is a delta against the device's copy, against
``git fetch`` of it into a repository holding the first version.

*Peak RSS* is ``ru_maxrss`` of the child (``os.wait4``, git's own children included);
*peak anon* is anonymous memory sampled every 5 ms from ``/proc`` (heap, what runs a
board out of RAM; file pages of a mapped pack are neither). The ratio is ours over
git's in the same run.

With ``--files N``, a pack of N random 10 KiB files (no artifact; 20,000 make a 196 MiB
pack) is imported too: what reading the pack through dulwich's mapping costs.

Run from the repository root:  python3 bench/artifact_memory_bench.py [--mib 1 64 256]
[--delta] [--files 20000]. The numbers go into docs/performance.md, "Artifacts".
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bundle_import_bench import Measured, measure

MiB = 2**20


def git(*args: str | Path, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *map(str, args)], cwd=cwd, check=True,
                          capture_output=True).stdout.decode().strip()


def make_repo(root: Path, mib: int, delta: bool) -> tuple[Path, str]:
    """A repository with artifacts/app.bin of ``mib`` MiB; returns its bundle and the
    commit whose artifact the apply lays down (with ``delta``: the deltified one)."""
    git("init", "-q", "-b", "main", root)
    (root / "artifacts").mkdir()
    path = root / "artifacts/app.bin"
    # Written and edited a MiB at a time: this process stays small, and its peak is
    # what every child it starts inherits in ru_maxrss (exec keeps the old high mark).
    with path.open("wb") as fh:
        for _ in range(mib):
            fh.write(os.urandom(MiB))
    git("add", "-A", cwd=root)
    git("-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "v1", cwd=root)
    if delta:
        with path.open("r+b") as fh:  # 1 % of the bytes: 40 bytes in every 4 KiB
            for at in range(0, mib * MiB, 4096):
                fh.seek(at)
                fh.write(os.urandom(40))
        git("branch", "v1", cwd=root)
        git("-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qam", "v2", cwd=root)
        git("repack", "-adfq", cwd=root)
        # What an update sends: v2 as a delta against the v1 the device has.
        git("bundle", "create", "-q", root.parent / f"{root.name}-v1.bundle", "v1", cwd=root)
        git("bundle", "create", "-q", root.parent / f"{root.name}-thin.bundle", "v1..main",
            cwd=root)
    bundle = root.parent / f"{root.name}.bundle"
    git("bundle", "create", "-q", bundle, "main", cwd=root)
    rev = "main"
    if delta:  # git keeps the newest whole and the older as a delta of it: lay that down
        pack = next((root / ".git/objects/pack").glob("*.idx"))
        deltified = {line.split()[0] for line in git("verify-pack", "-v", pack).splitlines()
                     if len(line.split()) >= 7 and line.split()[1] == "blob"}
        rev = next(r for r in ("main", "main~1")
                   if git("rev-parse", f"{r}:artifacts/app.bin", cwd=root) in deltified)
    return bundle, rev


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def child_import(repo: str, bundle: str, mib: str) -> None:
    from giter_agent.history.store import Caps, History

    caps = Caps(max_bundle_bytes=4 * 2**30, max_object_bytes=(int(mib) + 1) * MiB)
    with History(Path(repo), caps) as history, history.quarantine(Path(bundle)) as q:
        q.promote()
        for name, sha in q.refs.items():
            name = b"refs/heads/main" if name == b"refs/heads/v1" else name
            history.set_ref(name, history.ref(name), sha)


def child_apply(repo: str, target: str, rev: str) -> None:
    from giter_agent.core.durable import atomic_writer
    from giter_agent.history.artifacts import TreeArtifacts
    from giter_agent.history.objects import read_commit
    from giter_agent.history.store import History

    with History(Path(repo)) as history:
        tip = history.ref(b"refs/heads/main")
        assert tip is not None
        commit = read_commit(history.object_store, tip)
        if rev == "main~1":
            commit = read_commit(history.object_store, commit.parents[0])
        tree = commit.tree
        artifacts = TreeArtifacts(history.object_store, tree, max_bytes=2**40,
                                  scratch=history.path)
        with atomic_writer(Path(target)) as fh:
            artifacts.copy("artifacts/app.bin", fh)


def run_files(count: int, kib: int, work: Path) -> None:
    """A first sync of a pack of ``count`` random files of ``kib`` KiB (no artifact):
    what the pack's mapping costs while it is indexed."""
    src = work / f"files-{count}"
    git("init", "-q", "-b", "main", src)
    for i in range(count):
        folder = src / "groups" / f"g{i // 1000:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:05d}.bin").write_bytes(os.urandom(kib * 1024))
    git("add", "-A", cwd=src)
    git("-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "files", cwd=src)
    bundle = work / "files.bundle"
    git("bundle", "create", "-q", bundle, "main", cwd=src)
    print(f"== a pack of {count} files of {kib} KiB: bundle {bundle.stat().st_size / MiB:.1f} MiB")
    ours = measure([sys.executable, __file__, "--child-import", str(work / "files-ours.git"),
                    str(bundle), str(kib)])
    git("init", "-q", "--bare", work / "files-git.git")
    theirs = measure(["git", "-C", str(work / "files-git.git"), "fetch", "-q", str(bundle),
                      "main:main"])
    print(row("giter import (quarantine+promote)", ours))
    print(row("git fetch (reference)", theirs))
    print(f"  import: ours / git peak RSS x{ours.peak_rss / theirs.peak_rss:.2f}")


def row(label: str, m: Measured) -> str:
    return (f"  {label:<34} peak RSS {m.peak_rss / MiB:7.1f} MiB   peak anon "
            f"{m.peak_anon / MiB:7.1f} MiB   {m.seconds:6.2f} s")


def run(mib: int, delta: bool, work: Path) -> None:
    src = work / f"src-{mib}{'-delta' if delta else ''}"
    bundle, rev = make_repo(src, mib, delta)
    ours_repo, git_repo = work / f"ours-{src.name}.git", work / f"git-{src.name}.git"
    print(f"== artifact {mib} MiB{', 1% changed, whole history' if delta else ''}: "
          f"bundle {bundle.stat().st_size / MiB:.1f} MiB; apply lays down {rev}'s"
          f"{' (deltified)' if delta else ''}")
    ours_import = measure([sys.executable, __file__, "--child-import", str(ours_repo),
                           str(bundle), str(mib)])
    git("init", "-q", "--bare", git_repo)
    git_import = measure(["git", "-C", str(git_repo), "fetch", "-q", str(bundle),
                          "main:main"])
    print(row("giter import (quarantine+promote)", ours_import))
    print(row("git fetch (reference)", git_import))
    target, work_tree = work / f"{src.name}.out", work / f"wt-{src.name}"
    work_tree.mkdir()
    ours_apply = measure([sys.executable, __file__, "--child-apply", str(ours_repo),
                          str(target), rev])
    git_apply = measure(["git", f"--git-dir={git_repo}", f"--work-tree={work_tree}",
                         "checkout", rev, "--", "artifacts/app.bin"])
    git("checkout", "-q", rev, "--", "artifacts/app.bin", cwd=src)
    expected = sha256(src / "artifacts/app.bin")
    for path in (target, work_tree / "artifacts/app.bin"):
        assert sha256(path) == expected, f"{path} is not the artifact"
    print(row("giter apply (copy_blob, fsync)", ours_apply))
    print(row("git checkout -- FILE (reference)", git_apply))
    floor = measure([sys.executable, "-c", "import giter_agent.history.artifacts, "
                     "giter_agent.history.store, time; time.sleep(0.2)"])
    print(row("python + dulwich floor", floor))
    print(f"  apply:  ours / git peak RSS x{ours_apply.peak_rss / git_apply.peak_rss:.2f}, "
          f"ours above the floor {(ours_apply.peak_rss - floor.peak_rss) / MiB:+.1f} MiB "
          f"RSS, {(ours_apply.peak_anon - floor.peak_anon) / MiB:+.1f} MiB anon")
    print(f"  import: ours / git peak RSS x{ours_import.peak_rss / git_import.peak_rss:.2f}, "
          f"ours above the floor {(ours_import.peak_rss - floor.peak_rss) / MiB:+.1f} MiB RSS")
    if delta:
        run_update(src, mib, work, floor)


def run_update(src: Path, mib: int, work: Path, floor: Measured) -> None:
    """The incremental update: a device holding v1 imports the thin bundle v1..main,
    whose artifact is a delta against v1 (the base comes from the device's store)."""
    v1, thin = work / f"{src.name}-v1.bundle", work / f"{src.name}-thin.bundle"
    ours_repo, git_repo = work / f"ours-{src.name}-up.git", work / f"git-{src.name}-up.git"
    print(f"== update to {mib} MiB, 1% changed: thin bundle {thin.stat().st_size / MiB:.1f} MiB"
          f" on a device holding v1")
    subprocess.run([sys.executable, __file__, "--child-import", str(ours_repo), str(v1),
                    str(mib)], check=True)
    ours = measure([sys.executable, __file__, "--child-import", str(ours_repo), str(thin),
                    str(mib)])
    git("init", "-q", "--bare", git_repo)
    git("-C", git_repo, "fetch", "-q", v1, "v1:main")
    theirs = measure(["git", "-C", str(git_repo), "fetch", "-q", str(thin), "main:main"])
    print(row("giter import (quarantine+promote)", ours))
    print(row("git fetch (reference)", theirs))
    print(f"  update: ours / git peak RSS x{ours.peak_rss / theirs.peak_rss:.2f}, "
          f"ours above the floor {(ours.peak_rss - floor.peak_rss) / MiB:+.1f} MiB RSS")


def main() -> None:
    # A child is a process with one job, as the agent's are (giter_agent.core.lifetime).
    if len(sys.argv) > 1 and sys.argv[1] in ("--child-import", "--child-apply"):
        from giter_agent.core.lifetime import one_job

        job = child_import if sys.argv[1] == "--child-import" else child_apply
        one_job(lambda: job(*sys.argv[2:5]) or 0)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--delta", action="store_true",
                        help="also lay down a deltified version of the largest size")
    parser.add_argument("--files", type=int, default=0, metavar="N",
                        help="also import a pack of N random 10 KiB files (no artifact)")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, {git('--version')}")
    with tempfile.TemporaryDirectory(prefix="artifact-bench-") as tmp:
        for mib in args.mib:
            run(mib, False, Path(tmp))
        if args.delta:
            run(max(args.mib), True, Path(tmp))
        if args.files:
            run_files(args.files, 10, Path(tmp))


if __name__ == "__main__":
    main()
