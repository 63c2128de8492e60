"""The import resolves a large delta, and a large delta base, through files on disk.

A deltified artifact used to cost the import about twice its size in RAM: the delta's
base was inflated whole and cached, and joined once more to apply the delta. Now any
object over ``pack_index.STREAM_BYTES`` that a delta builds on is inflated (or itself
applied) into an unnamed temp file in the quarantine, hashed as it streams, and the
deltas on it read their copies from that file; a thin pack's large base is copied out
of the store the same way, and appended to the pack in slices. These tests count what
is resolved whole (never more than the threshold) and the temp files (where, which mode,
all closed), and check every id and CRC with git itself. No clocks, no RSS.
"""

from __future__ import annotations

import io
import os
import random
import stat
import tempfile
from pathlib import Path

import pytest
from dulwich.object_store import DiskObjectStore
from support import packcraft
from support.git import run

from giter_agent.core.budget import Budget
from giter_agent.core.errors import BundleError, HistoryError
from giter_agent.history import pack_index
from giter_agent.history.store import Caps, History

MiB = 2**20


class Watch:
    """What one import resolved whole (sizes) and which temp files it opened."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.whole: list[int] = []
        self.temps: list[tuple[str | None, object]] = []
        real_resolve = pack_index.BoundedIndexer._resolve_object
        real_get_raw = DiskObjectStore.get_raw
        real_temp = tempfile.TemporaryFile

        def resolve(indexer, offset, type_num, base):
            unpacked = real_resolve(indexer, offset, type_num, base)
            self.whole.append(sum(map(len, unpacked.obj_chunks or [])))
            return unpacked

        def get_raw(store, sha):
            type_num, raw = real_get_raw(store, sha)
            self.whole.append(len(raw))
            return type_num, raw

        def temp(*args, **kwargs):
            fh = real_temp(*args, **kwargs)
            mode = stat.S_IMODE(os.fstat(fh.fileno()).st_mode)
            self.temps.append((kwargs.get("dir"), fh, mode))
            return fh

        monkeypatch.setattr(pack_index.BoundedIndexer, "_resolve_object", resolve)
        monkeypatch.setattr(DiskObjectStore, "get_raw", get_raw)
        monkeypatch.setattr(tempfile, "TemporaryFile", temp)

    def check_temps(self, quarantine_root: Path) -> None:
        """Every temp file was in a quarantine, mode 0600, and is closed (gone)."""
        for folder, fh, mode in self.temps:
            assert folder is not None and Path(folder).parent == quarantine_root
            assert mode == 0o600
            assert fh.closed


def git(repo: Path, *args: str) -> bytes:
    return run("git", "-C", repo, *args).stdout


def commit_versions(root: Path, count: int, size: int) -> list[bytes]:
    """``count`` commits of artifacts/app.bin (random, 1 % changed each time)."""
    rnd = random.Random(5)
    data = bytearray(rnd.randbytes(size))
    run("git", "init", "-q", "-b", "main", root)
    (root / "artifacts").mkdir()
    out = []
    for i in range(count):
        for at in range(0, size - 40, 4096):
            data[at:at + 40] = rnd.randbytes(40)
        (root / "artifacts/app.bin").write_bytes(data)
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", f"v{i}")
        out.append(bytes(data))
    return out


def check_store(device: Path) -> None:
    """git agrees with every id and CRC32 of every index, and with every object."""
    for idx in (device / "objects/pack").glob("*.idx"):
        run("git", "verify-pack", idx)
    run("git", "--git-dir", device, "fsck", "--full", "--strict")


def test_a_deltified_artifact_is_imported_through_temp_files_not_memory(
        tmp_path, monkeypatch):
    root = tmp_path / "w"
    versions = commit_versions(root, 2, 3 * MiB + 7)
    git(root, "repack", "-adfq")  # one version whole, the other a delta of it
    git(root, "bundle", "create", "-q", str(tmp_path / "all.bundle"), "main")
    watch = Watch(monkeypatch)
    device = tmp_path / "device.git"
    with History(device, Caps()) as history:
        with history.quarantine(tmp_path / "all.bundle") as q:
            q.promote()
        history.set_ref(b"refs/heads/main", None, git(root, "rev-parse", "main").strip())
    assert watch.whole and max(watch.whole) <= pack_index.STREAM_BYTES
    assert len(watch.temps) == 1  # the delta's base, on disk
    watch.check_temps(device / "quarantine")
    check_store(device)
    for rev, data in (("main", versions[1]), ("main~1", versions[0])):
        blob = run("git", "--git-dir", device, "cat-file", "blob", f"{rev}:artifacts/app.bin")
        assert blob.stdout == data


def test_a_thin_bundle_takes_its_large_base_from_the_store_in_slices(
        tmp_path, monkeypatch):
    """An incremental bundle whose artifact is a delta against the device's copy: the
    base is copied out of the store to a temp file, and appended to the pack (which must
    stand alone) compressed slice by slice; neither is read whole."""
    root = tmp_path / "w"
    versions = commit_versions(root, 2, 3 * MiB + 7)
    git(root, "branch", "-f", "one", "main~1")
    git(root, "bundle", "create", "-q", str(tmp_path / "a.bundle"), "one")
    git(root, "bundle", "create", "-q", str(tmp_path / "b.bundle"), "one..main")
    assert (tmp_path / "b.bundle").stat().st_size < MiB  # the new version is a delta
    device = tmp_path / "device.git"
    with History(device, Caps()) as history:
        with history.quarantine(tmp_path / "a.bundle") as q:
            q.promote()
        watch = Watch(monkeypatch)
        with history.quarantine(tmp_path / "b.bundle") as q:
            q.promote()
        history.set_ref(b"refs/heads/main", None, git(root, "rev-parse", "main").strip())
    assert watch.whole and max(watch.whole) <= pack_index.STREAM_BYTES
    assert len(watch.temps) == 1  # the base, copied out of the store
    watch.check_temps(device / "quarantine")
    check_store(device)
    blob = run("git", "--git-dir", device, "cat-file", "blob", "main:artifacts/app.bin")
    assert blob.stdout == versions[1]


def test_a_chain_of_large_deltas_resolves_on_disk_level_by_level(tmp_path, monkeypatch):
    """base -> d1 -> d2, each 2 MiB: the base and d1 are built into temp files (each a
    delta's base), d2 only into its hash; every object is right."""
    crafted = packcraft.chain(2 * MiB, 2)
    (tmp_path / "chain.bundle").write_bytes(crafted.bundle)
    watch = Watch(monkeypatch)
    device = tmp_path / "device.git"
    with History(device, Caps()) as history:
        with history.quarantine(tmp_path / "chain.bundle") as q:
            q.promote()
        history.set_ref(b"refs/heads/main", None, crafted.commit.encode())
    assert max(watch.whole) <= pack_index.STREAM_BYTES
    assert len(watch.temps) == 2
    watch.check_temps(device / "quarantine")
    check_store(device)
    d2 = run("git", "--git-dir", device, "cat-file", "blob", "main:d00002").stdout
    assert d2 == b"\0" * (2 * MiB - 16) + b"d%015d" % 2


def _two_mib_base_and(delta_body: bytes, *, name_as: bytes) -> packcraft.Crafted:
    """A 2 MiB blob, a delta on it (``delta_body``), and a tree naming the base and
    ``name_as`` (the id the delta should build)."""
    size = 2 * MiB
    pack = packcraft.PackWriter()
    base = b"\1" * size
    at = pack.whole(packcraft.BLOB, base)
    pack.delta(at, delta_body)
    tree = packcraft.tree_of({b"base": packcraft.oid(b"blob", base), b"new": name_as})
    pack.whole(packcraft.TREE, tree)
    commit = packcraft.commit_of(packcraft.oid(b"tree", tree))
    pack.whole(packcraft.COMMIT, commit)
    commit_id = packcraft.oid(b"commit", commit)
    return packcraft.Crafted(packcraft.bundle_of(pack, {b"refs/heads/main": commit_id}),
                             commit_id.hex(), pack.count)


@pytest.mark.parametrize(("copy_end", "stamp", "reason"), [
    (2 * MiB + 1, b"x" * 16, "CorruptObject"),  # copies past the end of its base
    (2 * MiB - 16, b"y" * 16, "IncompleteBundle"),  # builds another object than named
])
def test_a_corrupt_large_delta_is_refused_and_nothing_is_promoted(
        tmp_path, monkeypatch, copy_end, stamp, reason):
    size = 2 * MiB
    body = (packcraft.varint(size) + packcraft.varint(copy_end + 16)
            + packcraft.copy_all(copy_end) + bytes([16]) + stamp)
    meant = b"\1" * (size - 16) + b"x" * 16
    crafted = _two_mib_base_and(body, name_as=packcraft.oid(b"blob", meant))
    (tmp_path / "bad.bundle").write_bytes(crafted.bundle)
    watch = Watch(monkeypatch)
    device = tmp_path / "device.git"
    with History(device, Caps()) as history:
        with pytest.raises((HistoryError, BundleError)) as caught, \
                history.quarantine(tmp_path / "bad.bundle") as q:
            q.promote()
        assert caught.value.reason == reason
    assert len(watch.temps) == 1  # the base was on disk; it is gone with the rest
    watch.check_temps(device / "quarantine")
    assert not list((device / "objects/pack").glob("*.pack"))
    assert not list((device / "quarantine").glob("*"))


def test_a_delta_declaring_a_huge_result_is_refused_before_it_is_written(tmp_path,
                                                                       monkeypatch):
    """The indexer checks ``max_object_bytes`` itself, from the delta's header, before
    it builds anything (the bundle's scanner does too, but the indexer does not rely on
    it): a 2 MiB base and a delta on it declaring 1 GiB, with a child of its own so it
    would be kept on disk. Only the base's temp file is ever opened."""
    size = 2 * MiB
    pack = packcraft.PackWriter()
    at = pack.whole(packcraft.BLOB, b"\1" * size)
    huge = pack.delta(at, packcraft.varint(size) + packcraft.varint(2**30)
                      + packcraft.copy_all(size))
    pack.delta(huge, packcraft.varint(2**30) + packcraft.varint(16) + packcraft.copy_op(0, 16))
    stream = io.BytesIO(pack.finish())
    store = DiskObjectStore.init(str(tmp_path / "objects"))
    watch = Watch(monkeypatch)
    with pytest.raises(BundleError) as caught:
        pack_index.add_pack(store, stream.read, stream.read, budget=Budget(3600),
                            cache_bytes=4 * MiB, max_object_bytes=4 * MiB)
    assert caught.value.reason == "TooLarge"
    assert len(watch.temps) == 1
    assert all(fh.closed for _, fh, _ in watch.temps)
    assert not list((tmp_path / "objects").glob("tmp_pack_*"))
    assert not list((tmp_path / "objects/pack").glob("*"))


def test_spooled_bases_are_capped_on_disk_and_rebuilt_when_evicted(tmp_path, monkeypatch):
    """A chain of 2 MiB results where every level keeps a pending sibling: the bases on
    disk are capped (two objects' worth here), the oldest go, and a sibling whose base
    went gets it rebuilt from its chain, through temp files again."""
    crafted = packcraft.stacked(2 * MiB, 4)
    (tmp_path / "stacked.bundle").write_bytes(crafted.bundle)
    indexers: list[pack_index.BoundedIndexer] = []
    real_close = pack_index.BoundedIndexer.close
    monkeypatch.setattr(pack_index.BoundedIndexer, "close",
                        lambda self: indexers.append(self) or real_close(self))
    watch = Watch(monkeypatch)
    device = tmp_path / "device.git"
    with History(device, Caps(max_object_bytes=2 * MiB)) as history:
        with history.quarantine(tmp_path / "stacked.bundle") as q:
            q.promote()
        history.set_ref(b"refs/heads/main", None, crafted.commit.encode())
    indexer = indexers[0]
    assert indexer.rebuilds >= 2
    assert indexer.peak_on_disk <= 2 * (2 * MiB)
    assert len(watch.temps) > 4  # the four bases, then those rebuilt
    assert max(watch.whole) <= pack_index.STREAM_BYTES
    watch.check_temps(device / "quarantine")
    check_store(device)


def test_a_reference_delta_on_a_large_object_of_the_same_pack_resolves_too(
        tmp_path, monkeypatch):
    """A delta naming its base by id (not by offset) is only found to build on an object
    once that object's id is known: it is then built again into a temp file, from the
    base still held, and the delta copies from there."""
    import zlib

    size = 2 * MiB
    pack = packcraft.PackWriter()
    base = os.urandom(size)
    pack.whole(packcraft.BLOB, base)
    stamp = b"r" * 16
    instructions = (packcraft.varint(size) + packcraft.varint(size)
                    + packcraft.copy_all(size - 16) + bytes([16]) + stamp)
    pack.body += (packcraft.object_header(7, len(instructions)) + packcraft.oid(b"blob", base)
                  + zlib.compress(instructions))
    pack.count += 1
    result = base[:size - 16] + stamp
    tree = packcraft.tree_of({b"base": packcraft.oid(b"blob", base),
                              b"new": packcraft.oid(b"blob", result)})
    pack.whole(packcraft.TREE, tree)
    commit = packcraft.commit_of(packcraft.oid(b"tree", tree))
    pack.whole(packcraft.COMMIT, commit)
    commit_id = packcraft.oid(b"commit", commit)
    (tmp_path / "ref.bundle").write_bytes(
        packcraft.bundle_of(pack, {b"refs/heads/main": commit_id}))
    watch = Watch(monkeypatch)
    device = tmp_path / "device.git"
    with History(device, Caps()) as history:
        with history.quarantine(tmp_path / "ref.bundle") as q:
            q.promote()
        history.set_ref(b"refs/heads/main", None, commit_id.hex().encode())
    assert max(watch.whole) <= pack_index.STREAM_BYTES
    assert len(watch.temps) == 1
    watch.check_temps(device / "quarantine")
    check_store(device)
    assert run("git", "--git-dir", device, "cat-file", "blob", "main:new").stdout == result
