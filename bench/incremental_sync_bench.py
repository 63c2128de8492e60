"""A whole-process incremental sync against git's equivalent, in the same run.

A device that holds a signed spec history of 1,000 commits (one File resource, changed
by every commit) receives a stick with 10 new commits. Interleaved rounds, each from
the same starting point (the state directory and the file copied back, untimed):

- ``giter-agent -c agent.toml sync --bundle new.bundle``: verify the 10 commits, apply
  the File, commit signed status: a process of its own, as a stick sync is;
- git's equivalent: ``git fetch`` of the same bundle into a bare copy holding the 1,000,
  ``git verify-commit`` of the 10 new commits (OpenSSH, the same signer file), and the
  file copied out of the new tip (``git show``), in one ``sh -c``.

Prints medians of wall and CPU time (user + system of the child and what it waited
for) and the ratios, plus the interpreter's own start-up (``python -c pass`` in the
same environment) as the floor any Python process pays.

    python3 bench/incremental_sync_bench.py              # 1,000 + 10, 11 rounds
    python3 bench/incremental_sync_bench.py --history 1000 --new 10 --rounds 21
    python3 bench/incremental_sync_bench.py --editable   # through the dev console script
    python3 bench/incremental_sync_bench.py --python "$(command -v python3)"  # another interpreter
    python3 bench/incremental_sync_bench.py --debian     # the Debian package's layout and libraries

The agent is started as an installed device starts it (``bench/installed_layout.py``:
the system's interpreter, the Debian launcher, a private package folder, no editable-install
hooks).

Results: docs/performance.md, "Whole-process incremental sync".
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
from typing import NamedTuple

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import installed_layout  # noqa: E402 - beside this script

DEVICE = installed_layout.DEVICE
API = "apiVersion: giter.dev/v1alpha1\n"


def run(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one child process, which must succeed."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[:3]} failed: {err.strip()[:500]}")
    return wall, usage.ru_utime + usage.ru_stime


def build(repo_dir: Path, key, signers: bytes, target: Path, count: int) -> list[bytes]:
    """``count`` signed commits on ``main``, each changing the File's content."""
    from dulwich.objects import Blob, Commit, Tree
    from dulwich.repo import Repo

    from giter_agent.trust.signed_commit import sign_commit
    from giter_agent.trust.trailers import with_branch_trailer

    repo = Repo.init_bare(str(repo_dir), mkdir=True)
    store = repo.object_store

    def tree_of(entries: dict[bytes, tuple[int, bytes]]) -> bytes:
        tree = Tree()
        for name, (mode, sha) in entries.items():
            tree.add(name, mode, sha)
        store.add_object(tree)
        return tree.id

    def blob(data: bytes) -> bytes:
        b = Blob.from_string(data)
        store.add_object(b)
        return b.id

    giter = tree_of({b"trust": (0o040000, tree_of({b"allowed_signers":
                                                   (0o100644, blob(signers))}))})
    ids: list[bytes] = []
    parent = None
    for i in range(count):
        motd = (f"{API}kind: File\nmetadata: {{name: motd}}\n"
                f"spec: {{path: {target}, content: \"version {i}\\n\", mode: \"0644\"}}\n")
        device = tree_of({b"motd.yaml": (0o100644, blob(motd.encode()))})
        root = tree_of({b".giter": (0o040000, giter),
                        b"devices": (0o040000, tree_of({DEVICE.encode(): (0o040000, device)}))})
        commit = Commit()
        commit.tree = root
        commit.parents = [parent] if parent else []
        commit.author = commit.committer = b"Fleet Operator <ops@example.invalid>"
        commit.author_time = commit.commit_time = 1_800_000_000 + i
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = with_branch_trailer(f"version {i}", "main").encode()
        sign_commit(commit, key)
        store.add_object(commit)
        ids.append(commit.id)
        parent = commit.id
    repo.close()
    return ids


class History(NamedTuple):
    """The fleet repository a bench syncs from, and what the device needs of it."""

    root: Path  # the files root of the device's config
    target: Path  # the File resource's path
    signers: Path  # allowed_signers naming the operator's key
    genv: dict[str, str]  # the environment git runs in: no user or system config
    ids: list[bytes]  # every commit, oldest first


def history_bundles(work: Path, history: int, new: int,
                    genv_extra: dict[str, str] | None = None) -> History:
    """``history`` + ``new`` signed commits in ``work/fleet.git``; beside it
    ``old.bundle`` (the first ``history``, repacked as a device holds them) and
    ``new.bundle`` (the rest)."""
    root = work / "root"
    root.mkdir()
    target = root / "motd"
    key, signers = installed_layout.operator(work)
    fleet = work / "fleet.git"
    genv = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
            "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(work), **(genv_extra or {})}
    t0 = time.perf_counter()
    ids = build(fleet, key, signers.read_bytes(), target, history + new)
    old, tip = ids[history - 1].decode(), ids[-1].decode()

    def git(*argv: str) -> None:
        subprocess.run(["git", "--git-dir", str(fleet), *argv], check=True, env=genv,
                       capture_output=True)

    git("update-ref", "refs/heads/main", old)
    git("repack", "-adq")
    git("bundle", "create", str(work / "old.bundle"), "main")
    git("update-ref", "refs/heads/main", tip)
    git("bundle", "create", str(work / "new.bundle"), "main", f"^{old}")
    print(f"history: {history} signed commits + {new} new, built in "
          f"{time.perf_counter() - t0:.1f} s")
    return History(root, target, signers, genv, ids)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--history", type=int, default=1000)
    p.add_argument("--new", type=int, default=10)
    p.add_argument("--rounds", type=int, default=11)
    installed_layout.add_flags(p)
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="incremental-sync-"))
    try:
        root, target, signers, genv, ids = history_bundles(
            work, args.history, args.new, {"GIT_CONFIG_GLOBAL": str(work / "gitconfig")})
        (work / "gitconfig").write_text(
            f"[gpg]\n\tformat = ssh\n[gpg \"ssh\"]\n\tallowedSignersFile = {signers}\n")

        config = installed_layout.device_config(work, signers, root)
        # Started as a device starts it (bench/installed_layout.py), or with --editable
        # through this development environment's console script; compiled bytecode.
        entry, floor = installed_layout.commands(work, args)
        agent = [*entry, "-c", str(config), "sync", "--bundle"]
        aenv = installed_layout.env(work)
        run([*agent, str(work / "old.bundle")], aenv)  # the device at 1,000 commits
        shutil.copytree(work / "state", work / "state0", symlinks=True)
        before = target.read_bytes()

        mirror0 = work / "mirror0.git"
        subprocess.run(["git", "init", "-q", "--bare", str(mirror0)], check=True, env=genv)
        subprocess.run(["git", "--git-dir", str(mirror0), "fetch", "-q",
                        str(work / "old.bundle"), "main:main"], check=True, env=genv)
        mirror = work / "mirror.git"
        fresh = [i.decode() for i in ids[args.history:]]
        git_sync = ["sh", "-c", " && ".join([
            f"git --git-dir {mirror} fetch -q {work / 'new.bundle'} main:main",
            f"git --git-dir {mirror} verify-commit {' '.join(fresh)} 2>/dev/null",
            f"git --git-dir {mirror} show main:devices/{DEVICE}/motd.yaml > {work / 'copy'}"])]

        results: dict[str, list[tuple[float, float]]] = {"giter-agent": [], "git": [],
                                                          "python": []}
        for _ in range(args.rounds):
            shutil.rmtree(work / "state")
            shutil.copytree(work / "state0", work / "state", symlinks=True)
            target.write_bytes(before)
            results["giter-agent"].append(run([*agent, str(work / "new.bundle")], aenv))
            if target.read_bytes() != f"version {args.history + args.new - 1}\n".encode():
                raise SystemExit("the sync did not apply the new spec")
            shutil.rmtree(mirror, ignore_errors=True)
            shutil.copytree(mirror0, mirror, symlinks=True)
            results["git"].append(run(git_sync, genv))
            results["python"].append(run(floor, aenv))

        print(f"incremental sync, {args.new} new commits on {args.history}: {args.rounds} "
              "interleaved rounds (medians)")
        med = {}
        labels = {"giter-agent": "giter-agent sync --bundle",
                  "git": "git fetch + verify-commit + copy",
                  "python": "python -c pass (interpreter start-up)"}
        for name, rows in results.items():
            wall = statistics.median(r[0] for r in rows)
            cpu = statistics.median(r[1] for r in rows)
            med[name] = (wall, cpu)
            print(f"  {labels[name]:<40} wall {1000 * wall:7.1f} ms   CPU {1000 * cpu:7.1f} ms")
        ours, ref = med["giter-agent"], med["git"]
        print(f"giter-agent / git: wall x{ours[0] / ref[0]:.2f}, CPU x{ours[1] / ref[1]:.2f}"
              " (goal: within x1.2)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
