"""Pack entries are copied, not inflated: a consolidation (or a promote that drops junk)
that meets a pack holding a large artifact reads it in slices, keeps every object and
every delta, and writes a pack git finds valid; a corrupt entry is a typed refusal that
changes nothing."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest
from support.git import run

from giter_agent.core.errors import HistoryError
from giter_agent.history import packs as packs_module
from giter_agent.history.store import History

GIT_ID = ("-c", "user.name=t", "-c", "user.email=t@t")
ARTIFACT = 3 * 2**20  # larger than a few MiB: never to be held whole


class Inflated:
    """Counts the bytes every ``zlib.decompressobj`` made (what dulwich inflates with)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bytes = 0
        real = zlib.decompressobj
        counter = self

        class Counting:
            def __init__(self, *args, **kwargs) -> None:
                self._real = real(*args, **kwargs)

            def decompress(self, data, *args):
                out = self._real.decompress(data, *args)
                counter.bytes += len(out)
                return out

            def flush(self, *args):
                out = self._real.flush(*args)
                counter.bytes += len(out)
                return out

            def __getattr__(self, name):
                return getattr(self._real, name)

        monkeypatch.setattr(zlib, "decompressobj", Counting)


def commit(work: Path, name: str, data: bytes, message: str) -> None:
    (work / name).write_bytes(data)
    run("git", "-C", work, "add", name)
    run("git", "-C", work, *GIT_ID, "commit", "-qm", message)


def objects(repo: Path) -> set[str]:
    out = run("git", "--git-dir", repo, "cat-file", "--batch-all-objects", "--batch-check")
    return set(out.stdout.decode().splitlines())


def fsck(repo: Path) -> None:
    proc = run("git", "--git-dir", repo, "fsck", "--strict", "--full", "--no-dangling",
               check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-500:]


@pytest.fixture
def repo(tmp_path) -> Path:
    """An artifact pack (a random artifact, and a text file with deltas) plus a pack
    per later commit, the way a device gains them."""
    work = tmp_path / "work"
    run("git", "init", "-q", "-b", "main", work)
    text = "".join(f"line {i} of a file that changes a little\n" for i in range(400))
    commit(work, "app.bin", os.urandom(ARTIFACT), "artifact")
    for i in range(3):
        commit(work, "big.txt", (text + f"change {i}\n").encode(), f"text {i}")
    run("git", "-C", work, "repack", "-q", "-a", "-d")
    for i in range(4):
        commit(work, f"small{i}.txt", f"small {i}\n".encode(), f"small {i}")
        run("git", "-C", work, "repack", "-q", "-d")
    return work / ".git"


def test_consolidation_copies_every_entry_without_inflating_it(repo, monkeypatch):
    before = objects(repo)
    with History(repo) as history:
        inflated = Inflated(monkeypatch)
        result = history.consolidate()
        assert result.merged_packs == 5  # the artifact pack too: 12 objects < 2 * 4 * 3
        assert inflated.bytes == 0
        assert all(history.object_store[sha.split()[0].encode()] for sha in before)
    assert objects(repo) == before
    fsck(repo)
    [idx] = (repo / "objects/pack").glob("*.idx")
    verify = run("git", "--git-dir", repo, "verify-pack", "-v", idx)
    assert b"chain length = 1" in verify.stdout  # the offset deltas were kept


def test_an_object_held_by_two_packs_is_written_once_and_deltas_follow_it(tmp_path,
                                                                            monkeypatch):
    work = tmp_path / "work"
    run("git", "init", "-q", "-b", "main", work)
    text = "".join(f"line {i} of a file that changes a little\n" for i in range(400))
    for i in range(4):
        commit(work, "big.txt", (text + f"change {i}\n").encode(), f"c{i}")
    repo = work / ".git"
    listed = run("git", "-C", work, "rev-list", "--objects", "main").stdout.decode()
    ids = [line.split()[0] for line in listed.splitlines()]
    pack_dir = repo / "objects/pack"
    # Two packs sharing objects: the base of the second one's deltas may come from the first.
    for chosen in (ids[: len(ids) // 2 + 2], ids[len(ids) // 2 - 2:]):
        run("git", "--git-dir", repo, "pack-objects", "-q", pack_dir / "pack",
            input=("\n".join(chosen) + "\n").encode())
    run("git", "--git-dir", repo, "prune-packed")
    before = objects(repo)
    with History(repo) as history:
        inflated = Inflated(monkeypatch)
        result = history.consolidate()
        assert result.merged_packs == 2 and result.objects_written == len(before)
        assert inflated.bytes == 0
    assert objects(repo) == before
    fsck(repo)


def test_a_corrupt_entry_is_a_typed_refusal_and_replaces_nothing(repo):
    pack_dir = repo / "objects/pack"
    packs = sorted(pack_dir.glob("*.pack"), key=lambda p: p.stat().st_size)
    big = packs[-1]
    big.chmod(0o644)
    with big.open("r+b") as fh:  # a bit flipped inside the artifact's stored bytes
        fh.seek(ARTIFACT // 2)
        byte = fh.read(1)
        fh.seek(ARTIFACT // 2)
        fh.write(bytes([byte[0] ^ 0x40]))
    before = {p.name: p.read_bytes() for p in pack_dir.iterdir() if p.suffix != ".pack"}
    listing = sorted(p.name for p in pack_dir.iterdir())
    with History(repo) as history:
        with pytest.raises(HistoryError) as refused:
            packs_module.consolidate(history.object_store)
        assert refused.value.reason == "CorruptObject"
        assert "checksum" in str(refused.value)
        assert sorted(p.name for p in pack_dir.iterdir()) == listing  # no temp, none removed
        # The repository's writer goes on (a pass saves its state, an import its
        # answer): the merge is left undone and says why.
        done = history.consolidate()
    assert done.merged_packs == 0 and done.skipped is not None
    assert done.skipped.startswith("CorruptObject") and "checksum" in done.skipped
    assert sorted(p.name for p in pack_dir.iterdir()) == listing
    assert {p.name: p.read_bytes() for p in pack_dir.iterdir() if p.suffix != ".pack"} == before


def test_promote_drops_junk_without_inflating_what_it_keeps(tmp_path, monkeypatch):
    work = tmp_path / "work"
    run("git", "init", "-q", "-b", "main", work)
    commit(work, "app.bin", os.urandom(ARTIFACT), "artifact")
    bundle = tmp_path / "plain.bundle"
    run("git", "-C", work, "bundle", "create", "-q", bundle, "main")
    junk_file = tmp_path / "junk"
    junk_file.write_bytes(os.urandom(2**20))
    junk = run("git", "-C", work, "hash-object", "-w", junk_file).stdout.decode().strip()
    pack = run("git", "-C", work, "pack-objects", "--revs", "--stdout", "-q",
               input=f"main\n{junk}\n".encode()).stdout
    raw = bundle.read_bytes()
    offer = tmp_path / "junk.bundle"
    offer.write_bytes(raw[:raw.index(b"\n\n") + 2] + pack)
    repo = tmp_path / "repo.git"
    tip = run("git", "-C", work, "rev-parse", "main").stdout.strip()
    with History(repo) as history:
        with history.quarantine(offer) as q:
            inflated = Inflated(monkeypatch)
            q.promote()
            assert inflated.bytes < 2**20  # the commit and tree, never the artifact
            monkeypatch.undo()
        assert tip in history.object_store
        assert junk.encode() not in history.object_store
    fsck(repo)


def test_a_kept_delta_whose_base_is_dropped_is_written_whole(tmp_path):
    work = tmp_path / "work"
    run("git", "init", "-q", "-b", "main", work)
    base = os.urandom(2**16)
    commit(work, "app.bin", base[:-100] + b"kept version" * 8, "kept")
    bundle = tmp_path / "plain.bundle"
    run("git", "-C", work, "bundle", "create", "-q", bundle, "main")
    junk_file = tmp_path / "junk"
    junk_file.write_bytes(base)
    junk = run("git", "-C", work, "hash-object", "-w", junk_file).stdout.decode().strip()
    listed = run("git", "-C", work, "rev-list", "--objects", "main").stdout.decode()
    # Named like the kept blob and larger, the junk is what git deltifies it against.
    pack = run("git", "-C", work, "pack-objects", "--stdout", "-q",
               input=f"{listed}{junk} app.bin\n".encode()).stdout
    (tmp_path / "p.pack").write_bytes(pack)
    shown = run("git", "-C", work, "index-pack", "-o", tmp_path / "p.idx",
                tmp_path / "p.pack").returncode
    verify = run("git", "verify-pack", "-v", tmp_path / "p.idx").stdout.decode()
    assert shown == 0 and f" 1 {junk}" in verify  # the kept blob is a delta on the junk
    raw = bundle.read_bytes()
    offer = tmp_path / "junk.bundle"
    offer.write_bytes(raw[:raw.index(b"\n\n") + 2] + pack)
    repo = tmp_path / "repo.git"
    kept = run("git", "-C", work, "rev-parse", "main:app.bin").stdout.strip()
    with History(repo) as history:
        with history.quarantine(offer) as q:
            q.promote()
        assert history.object_store[kept].data.endswith(b"kept version" * 8)
        assert junk.encode() not in history.object_store
    fsck(repo)


def test_an_index_without_checksums_has_each_stream_checked_by_inflating_it(repo):
    run("git", "--git-dir", repo, "-c", "pack.indexVersion=1", "repack", "-q", "-a", "-d")
    blobs = [run("git", "--git-dir", repo, "hash-object", "-w", "--stdin",
                 input=f"blob {i}\n".encode()).stdout.decode().strip() for i in range(30)]
    # A second pack, as large as the first in objects so the two merge, indexed v1 too.
    run("git", "--git-dir", repo, "pack-objects", "-q", "--index-version=1",
        repo / "objects/pack/pack", input=("\n".join(blobs) + "\n").encode())
    run("git", "--git-dir", repo, "prune-packed")
    before = objects(repo)
    pack_dir = repo / "objects/pack"
    big = max(pack_dir.glob("*.pack"), key=lambda p: p.stat().st_size)
    copy = big.read_bytes()
    big.chmod(0o644)
    with big.open("r+b") as fh:  # the artifact's stream no longer matches its adler32
        fh.seek(ARTIFACT // 2)
        fh.write(bytes([copy[ARTIFACT // 2] ^ 0x40]))
    with History(repo) as history, pytest.raises(HistoryError) as refused:
        packs_module.consolidate(history.object_store)
    assert refused.value.reason == "CorruptObject"
    big.write_bytes(copy)
    with History(repo) as history:
        assert history.consolidate().merged_packs == 2
    assert objects(repo) == before
    fsck(repo)
