"""Signature-verification throughput: our verify_update against ``git verify-commit``.

Run by hand (not a timed test): ``python3 bench/verify_bench.py [--commits 2000]``.
It builds a linear history of signed commits with dulwich + ``giter_agent.trust.signed_commit``
(pure Python, so building is quick), packs it with ``git repack``, checks that git
accepts every commit, and times both verifiers on the same packed repository. It also
times the floor: ``cryptography``'s ed25519 verify alone over the same number of
signatures on one core, interleaved with our rounds so that a busy machine slows both
alike. Ours is timed twice: on one thread (``workers=1``) and with the signature
arithmetic on the default pool (``trust.signature_pool``: one thread per core, at most
four). ``--stages`` adds where one thread's time goes, per commit. The ratios are what
count; the numbers go into docs/performance.md, "Signature verification".
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dulwich.objects import Blob, Commit, Tree
from dulwich.repo import Repo

from giter_agent.trust import signed_commit, sshsig
from giter_agent.trust.checked_objects import CheckedReader
from giter_agent.trust.signature_pool import default_workers
from giter_agent.trust.spec_rule import TrustRoot, new_commits, verify_update
from giter_agent.trust.trust_files import TrustFiles

CHUNK = 200  # commits per `git verify-commit` call: keeps argv short, amortises start-up


def _tree(store, files: dict[bytes, bytes]) -> bytes:
    """Store a nested tree for ``path -> content`` and return its id."""
    nested: dict = {}
    for path, content in files.items():
        *dirs, name = path.split(b"/")
        node = nested
        for d in dirs:
            node = node.setdefault(d, {})
        node[name] = content

    def put(node: dict) -> bytes:
        tree = Tree()
        for name, value in node.items():
            if isinstance(value, dict):
                tree.add(name, 0o040000, put(value))
            else:
                blob = Blob.from_string(value)
                store.add_object(blob)
                tree.add(name, 0o100644, blob.id)
        store.add_object(tree)
        return tree.id

    return put(nested)


def build_history(repo: Repo, key, signers_line: bytes, count: int) -> list[bytes]:
    """``count`` signed commits, each changing one resource file; returns ids oldest first."""
    store = repo.object_store
    ids: list[bytes] = []
    parent = None
    for i in range(count):
        files = {
            b".giter/trust/allowed_signers": signers_line,
            b"devices/pi-01/app.yaml": b"kind: App\nspec:\n  image: web:%d\n" % i,
            b"groups/lab/net.yaml": b"kind: Network\nspec:\n  vlan: 3\n",
        }
        commit = Commit()
        commit.tree = _tree(store, files)
        commit.parents = [parent] if parent else []
        commit.author = commit.committer = b"Fleet Operator <ops@example.invalid>"
        commit.author_time = commit.commit_time = 1_700_000_000 + i
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = b"Roll web to %d\n" % i
        signed_commit.sign_commit(commit, key)
        store.add_object(commit)
        ids.append(commit.id)
        parent = commit.id
    repo.refs[b"refs/heads/main"] = parent
    return ids


def git_verify_all(repo_dir: Path, signers: Path, ids: list[bytes]) -> float:
    """Seconds for ``git verify-commit`` over every id, in chunks; fails if any is refused."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    start = time.perf_counter()
    for i in range(0, len(ids), CHUNK):
        proc = subprocess.run(
            ["git", "-C", str(repo_dir), "-c", "gpg.format=ssh",
             "-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit",
             *(c.decode() for c in ids[i:i + CHUNK])],
            capture_output=True, env=env, check=False)
        if proc.returncode != 0:
            sys.exit(f"git refused a commit in chunk {i // CHUNK}:\n{proc.stderr.decode()}")
    return time.perf_counter() - start


def ed25519_floor(count: int) -> float:
    """Seconds for ``cryptography`` to verify ``count`` ed25519 signatures (one core).

    Messages the size of a signed commit's payload; the key object is made once, so this
    is the signature arithmetic alone: no parsing, hashing of objects or reading.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    messages = [b"x" * 400 + i.to_bytes(4, "big") for i in range(count)]
    signed = [(key.sign(m), m) for m in messages]
    start = time.perf_counter()
    for signature, message in signed:
        public.verify(signature, message)
    return time.perf_counter() - start


def stages(repo_dir: Path, tip: bytes, root: TrustRoot, rounds: int) -> list[tuple[str, float]]:
    """Seconds per commit (best of ``rounds``) of each stage of one thread's verification,
    each timed alone over the whole history."""
    from giter_agent.history.commit_layout import parse_layout

    def best(stage) -> float:
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            stage()
            times.append(time.perf_counter() - start)
        return min(times)

    def walk() -> list[bytes]:
        with Repo(str(repo_dir)) as repo:
            reader = CheckedReader(repo.object_store)
            return new_commits(repo.object_store, None, tip, held=lambda _: False,
                               reader=reader)

    with Repo(str(repo_dir)) as repo:
        reader = CheckedReader(repo.object_store)
        order = new_commits(repo.object_store, None, tip, held=lambda _: False, reader=reader)
        raws = [reader.commit(oid) for oid in order]
        parts = [signed_commit.parse(raw) for raw in raws]
        keys = [*root.root_keys, *root.signers]

        def lookups() -> None:
            sets = TrustFiles(CheckedReader(repo.object_store), root)
            for oid, commit in zip(order, parts, strict=True):
                sets.note_tree(oid, commit.tree)
                for parent in commit.parents:
                    sets.of(parent)

        pending = [sshsig.prepare(c.signature or b"", c.payload, keys) for c in parts]
        found = [
            ("walk: read, inflate, SHA-1 check", best(walk)),
            ("commit layout (history.commit_layout)",
             best(lambda: [parse_layout(raw) for raw in raws])),
            ("signature armour (sshsig.dearmor)",
             best(lambda: [sshsig.dearmor.__wrapped__(c.signature) for c in parts])),
            ("trust file of the parent (by tree id)", best(lookups)),
            ("SSHSIG parse, SHA-512, key lookup",
             best(lambda: [sshsig.prepare(c.signature or b"", c.payload, keys)
                           for c in parts])),
            ("ed25519 arithmetic (cryptography)",
             best(lambda: [check.finish() for check in pending])),
        ]
    return [(name, seconds / len(order)) for name, seconds in found]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3, help="best of N for our verifier")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="threads for the signature arithmetic (default: one per core, "
                        "at most four)")
    parser.add_argument("--stages", action="store_true",
                        help="also time each stage of one thread's verification")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="giter-bench-") as tmp:
        work = Path(tmp)
        key = sshsig.generate_ed25519()
        line = f'bench namespaces="git" {sshsig.public_key_of(key).openssh()}\n'
        signers = work / "allowed_signers"
        signers.write_text(line)
        repo = Repo.init(str(work / "repo"), mkdir=True)

        start = time.perf_counter()
        ids = build_history(repo, key, line.encode(), args.commits)
        built = time.perf_counter() - start
        subprocess.run(["git", "-C", str(work / "repo"), "repack", "-adq"], check=True)
        subprocess.run(["git", "-C", str(work / "repo"), "prune-packed"], check=True)

        root = TrustRoot.load(signers)
        n = args.commits
        ours = one = floor = float("inf")
        for _ in range(args.rounds):
            for workers in (1, args.workers):
                with Repo(str(work / "repo")) as fresh:  # fresh: no warm caches
                    start = time.perf_counter()
                    result = verify_update(fresh.object_store, None, ids[-1], root,
                                           workers=workers)
                    took = time.perf_counter() - start
                assert result.commits == tuple(ids)
                if workers == 1:
                    one = min(one, took)
                else:
                    ours = min(ours, took)
            floor = min(floor, ed25519_floor(n))
        if args.workers == 1:
            ours = one
        per_stage = stages(work / "repo", ids[-1], root, args.rounds) if args.stages else []
        held = set(ids).__contains__  # a device holds its accepted history

        def one_on_top_of(count: int) -> float:
            """Best of the rounds: 1 new commit on top of ``count`` accepted ones."""
            best = float("inf")
            for _ in range(args.rounds):
                store = Repo(str(work / "repo")).object_store
                start = time.perf_counter()
                verify_update(store, ids[count - 1], ids[count], root,
                              held=lambda c, top=ids[count]: c != top and held(c))
                best = min(best, time.perf_counter() - start)
            return best

        one_more = one_on_top_of(n - 1)
        one_short = one_on_top_of(min(100, n - 1))
        theirs = git_verify_all(work / "repo", signers, ids)

    git_version = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout
    ssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr
    print(f"history:   {n} ed25519-signed commits, built and signed in {built:.2f} s "
          f"(dulwich + agent.sshsig), then packed")
    print(f"machine:   {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, {git_version.strip()}, {ssh_version.strip()}")
    print(f"ours:      verify_update   {ours:7.3f} s  {n / ours:9.0f} commits/s "
          f"(best of {args.rounds}, signatures on {args.workers} threads)")
    print(f"one core:  verify_update   {one:7.3f} s  {n / one:9.0f} commits/s "
          f"(best of {args.rounds}, workers=1: everything on one thread)")
    print(f"git:       verify-commit   {theirs:7.3f} s  {n / theirs:9.0f} commits/s "
          f"(chunks of {CHUNK}, every commit accepted)")
    print(f"floor:     ed25519 verify  {floor:7.3f} s  {n / floor:9.0f} signatures/s "
          "(cryptography alone, one core, best of the same rounds)")
    print(f"ratio:     ours is {theirs / ours:.1f}x git's throughput, "
          f"{floor / ours:.0%} of the one-core ed25519 floor; on one thread "
          f"{theirs / one:.1f}x git's, {floor / one:.0%} of the floor")
    for name, seconds in per_stage:
        print(f"stage:     {seconds * 1e6:6.1f} us per commit  {name}")
    short = min(100, n - 1)
    print(f"one more:  1 new commit on top of {n - 1}: {one_more * 1000:.1f} ms; on top of "
          f"{short}: {one_short * 1000:.1f} ms; ratio {one_more / one_short:.2f} (the walk "
          "stops at the accepted tip: history length does not count)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
