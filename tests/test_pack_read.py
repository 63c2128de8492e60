"""Objects read straight from a pack's mapping (``history.pack_read``): byte for byte
what git stored, offset and reference deltas alike, and the trust rule's walk reads
through it rather than through dulwich's per-object reader. Counted, never timed."""

from __future__ import annotations

from pathlib import Path

import pytest
from dulwich.objects import Blob, Tree
from dulwich.pack import Pack
from support.git import ops_commit, run

from giter_agent.history.pack_read import PackReader
from giter_agent.history.store import History
from giter_agent.trust import signed_commit, sshsig
from giter_agent.trust.spec_rule import TrustRoot, verify_update

pytestmark = pytest.mark.unit


def history_of(repo: Path, count: int, key=None, signers: bytes = b"") -> list[bytes]:
    """``count`` commits, each rewriting one file of a tree of several (deltas galore)."""
    h = History(repo)
    store = h.object_store
    parent, ids = None, []
    for i in range(count):
        tree = Tree()
        for j in range(6):
            body = (f"file {j}\n" * 40 + (f"version {i}\n" if j == i % 6 else "")).encode()
            blob = Blob.from_string(body)
            store.add_object(blob)
            tree.add(f"f{j}.txt".encode(), 0o100644, blob.id)
        if signers:
            trust = Blob.from_string(signers)
            store.add_object(trust)
            inner, giter = Tree(), Tree()
            inner.add(b"allowed_signers", 0o100644, trust.id)
            store.add_object(inner)
            giter.add(b"trust", 0o040000, inner.id)
            store.add_object(giter)
            tree.add(b".giter", 0o040000, giter.id)
        store.add_object(tree)
        commit = ops_commit(tree.id, parent, i, f"change {i}\n".encode())
        if key is not None:
            signed_commit.sign_commit(commit, key)
        store.add_object(commit)
        parent = commit.id
        ids.append(commit.id)
    h.set_ref(b"refs/heads/main", None, parent)
    h.close()
    return ids


@pytest.mark.parametrize("deltas", ["offset", "reference"])
def test_every_object_reads_as_dulwich_reads_it(tmp_path, deltas):
    repo = tmp_path / "repo.git"
    history_of(repo, 40)
    if deltas == "offset":
        run("git", "--git-dir", repo, "repack", "-adfq", "--depth=50")
    else:  # what a consolidated pack holds: deltas that name their base by id
        listing = run("git", "--git-dir", repo, "rev-list", "--objects", "--all").stdout
        pack_id = run("git", "--git-dir", repo, "pack-objects", "-q", "--no-reuse-delta",
                      "--depth=50", str(repo / "objects/pack/pack"),
                      input=listing).stdout.decode().strip()
        for old in (repo / "objects/pack").glob("pack-*.pack"):
            if pack_id not in old.name:
                old.unlink()
                old.with_suffix(".idx").unlink()
        run("git", "--git-dir", repo, "prune-packed")
    history = History(repo)
    [pack] = history.object_store.packs
    try:
        kinds = {pack.data.get_object_at(offset)[0]
                 for _, offset, _ in pack.index.iterentries()}
        assert ({6} if deltas == "offset" else {7}) <= kinds  # the deltas are there
        reader = PackReader(pack, cache_bytes=4096)  # a small cache: bases evicted too
        names = [sha for sha, _, _ in pack.index.iterentries()]
        for sha in names:
            assert reader.get_raw(sha) == pack.get_raw(sha)
        with pytest.raises(KeyError):
            reader.get_raw(b"0" * 40)
    finally:
        history.close()


def test_the_trust_walk_reads_through_the_pack_mapping(tmp_path, monkeypatch):
    repo = tmp_path / "repo.git"
    key = sshsig.generate_ed25519()
    line = f'ops namespaces="git" {sshsig.public_key_of(key).openssh()}\n'
    (tmp_path / "signers").write_text(line)
    ids = history_of(repo, 30, key, line.encode())
    run("git", "--git-dir", repo, "repack", "-adq")
    calls: list[bytes] = []
    get_raw = Pack.get_raw
    monkeypatch.setattr(Pack, "get_raw", lambda self, sha: (calls.append(sha),
                                                            get_raw(self, sha))[1])
    root = TrustRoot.load(tmp_path / "signers")
    with History(repo) as h:
        verified = verify_update(h.object_store, None, ids[-1], root)
    assert len(verified.commits) == 30
    assert calls == []  # no object went through dulwich's per-object reader
