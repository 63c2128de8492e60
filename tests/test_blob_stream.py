"""``history.blob_stream.copy_blob``: a blob streamed out of real git packs, checked
against ``git cat-file``, never through dulwich's whole-object reader.

Packs are made by git itself (``git repack`` with deep delta chains, thin bundles), so
every entry shape git writes is read: undeltified, ofs-delta chains, ref-delta bases
appended by the import, loose objects.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest
from dulwich.object_store import DiskObjectStore
from support.git import run

from giter_agent.core.errors import HistoryError
from giter_agent.history import blob_stream
from giter_agent.history.blob_stream import blob_size, copy_blob
from giter_agent.history.store import Caps, History


class CountingStore:
    """The store with every whole-object read counted (dulwich's ``get_raw`` and
    ``__getitem__``): the streaming path must never call them."""

    def __init__(self, store: DiskObjectStore) -> None:
        self._store = store
        self.whole_reads = 0

    def get_raw(self, sha):
        self.whole_reads += 1
        return self._store.get_raw(sha)

    def __getitem__(self, sha):
        self.whole_reads += 1
        return self._store[sha]

    def __getattr__(self, name):
        return getattr(self._store, name)


def git(repo: Path, *args: str, input: bytes | None = None) -> bytes:
    return run("git", "-C", repo, *args, input=input).stdout


def versions(size: int, count: int, seed: int = 7) -> list[bytes]:
    """``count`` versions of a random file, each a few small edits on the one before."""
    rnd = random.Random(seed)
    data = bytearray(rnd.randbytes(size))
    out = [bytes(data)]
    for _ in range(count - 1):
        for _ in range(3):
            at = rnd.randrange(size - 64)
            data[at:at + 64] = rnd.randbytes(64)
        data += rnd.randbytes(100)
        out.append(bytes(data))
    return out


@pytest.fixture
def repo(tmp_path) -> Path:
    """A work repository whose artifacts/app.bin went through 6 versions of 2 MiB, packed
    by git with every older version a delta (chains up to 5 deep)."""
    root = tmp_path / "w"
    run("git", "init", "-q", "-b", "main", root)
    (root / "artifacts").mkdir()
    for i, data in enumerate(versions(2 * 2**20 + 12345, 6)):
        (root / "artifacts/app.bin").write_bytes(data)
        (root / "small.txt").write_text(f"v{i}\n")
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", f"v{i}")
    git(root, "repack", "-adfq", "--depth=50", "--window=10")
    return root


def blob_ids(repo: Path, path: str) -> list[str]:
    revs = git(repo, "rev-list", "main").decode().split()
    return [git(repo, "rev-parse", f"{rev}:{path}").decode().strip() for rev in revs]


def packed_shapes(repo: Path) -> dict[str, int]:
    """blob id -> delta depth, as ``git verify-pack`` reports it (0: undeltified)."""
    pack = next((repo / ".git/objects/pack").glob("*.idx"))
    shapes = {}
    for line in git(repo, "verify-pack", "-v", str(pack)).decode().splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[1] == "blob":
            shapes[fields[0]] = int(fields[5]) if len(fields) >= 7 else 0
    return shapes


def test_every_version_streams_out_as_git_has_it_without_a_whole_object_read(repo):
    shapes = packed_shapes(repo)
    ids = blob_ids(repo, "artifacts/app.bin")
    assert max(shapes[i] for i in ids) >= 3 and min(shapes[i] for i in ids) == 0
    store = CountingStore(DiskObjectStore(str(repo / ".git/objects")))
    for oid in ids:
        out = io.BytesIO()
        size = copy_blob(store, oid.encode(), out, limit=2**30)
        expected = git(repo, "cat-file", "blob", oid)
        assert out.getvalue() == expected and size == len(expected)
        assert blob_size(store, oid.encode()) == len(expected)
    assert store.whole_reads == 0


def test_a_long_chain_resolves_through_temp_files_not_memory(repo, monkeypatch, tmp_path):
    # Every intermediate result goes to disk (SMALL_BASE 0): the spooled path is exercised.
    monkeypatch.setattr(blob_stream, "SMALL_BASE", 0)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    store = DiskObjectStore(str(repo / ".git/objects"))
    oid = max(blob_ids(repo, "artifacts/app.bin"), key=lambda i: packed_shapes(repo)[i])
    target = tmp_path / "out.bin"
    with target.open("wb") as fh:
        copy_blob(store, oid.encode(), fh.fileno(), limit=2**30, scratch=scratch)
    assert target.read_bytes() == git(repo, "cat-file", "blob", oid)
    assert list(scratch.iterdir()) == []  # unnamed temp files: nothing left behind


def test_a_thin_incremental_bundle_imported_by_the_agent_streams_out(tmp_path, repo):
    """The device's own store after two imports: the second bundle is thin, its blob a
    ref-delta against the first import's, completed by the importer."""
    first, second = git(repo, "rev-list", "main").decode().split()[1::-1][:2]
    git(repo, "branch", "-f", "one", first)
    git(repo, "branch", "-f", "step", second)
    git(repo, "bundle", "create", "-q", str(tmp_path / "a.bundle"), "one")
    git(repo, "bundle", "create", "-q", str(tmp_path / "b.bundle"), "one..step")
    assert (tmp_path / "b.bundle").stat().st_size < 100_000  # the new version is a delta
    history = History(tmp_path / "device.git", Caps())
    for name in ("a.bundle", "b.bundle"):
        with history.quarantine(tmp_path / name) as q:
            q.promote()
    oid = git(repo, "rev-parse", f"{second}:artifacts/app.bin").strip()
    out = io.BytesIO()
    copy_blob(CountingStore(history.object_store), oid, out, limit=2**30)
    assert out.getvalue() == git(repo, "cat-file", "blob", oid.decode())
    history.close()
    # The import hashed the 2 MiB delta result in slices: git agrees with every id and
    # CRC32 of the index it wrote.
    for idx in (tmp_path / "device.git/objects/pack").glob("*.idx"):
        run("git", "verify-pack", idx)
    run("git", "--git-dir", tmp_path / "device.git", "fsck", "--strict")


def test_a_loose_blob_streams_too(repo):
    oid = git(repo, "hash-object", "-w", "--stdin", input=b"loose bytes\n").strip()
    out = io.BytesIO()
    copy_blob(DiskObjectStore(str(repo / ".git/objects")), oid, out, limit=100)
    assert out.getvalue() == b"loose bytes\n"


def test_refusals_are_typed_and_write_nothing(repo):
    store = DiskObjectStore(str(repo / ".git/objects"))
    oid = blob_ids(repo, "artifacts/app.bin")[0].encode()
    tree = git(repo, "rev-parse", "main^{tree}").strip()
    cases = [(oid, 2 * 2**20, "FileTooLarge"), (tree, 2**30, "UnsafeTreeEntry"),
             (b"0" * 40, 2**30, "MissingObject")]
    for sha, limit, reason in cases:
        out = io.BytesIO()
        with pytest.raises(HistoryError) as caught:
            copy_blob(store, sha, out, limit=limit)
        assert caught.value.reason == reason
        assert out.getvalue() == b""


def test_a_flipped_byte_in_the_pack_is_corrupt_not_a_wrong_file(tmp_path):
    root = tmp_path / "w"
    run("git", "init", "-q", "-b", "main", root)
    (root / "a.bin").write_bytes(os.urandom(300_000))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "one")
    git(root, "repack", "-adq")
    oid = git(root, "rev-parse", "main:a.bin").strip()
    pack = next((root / ".git/objects/pack").glob("*.pack"))
    store = DiskObjectStore(str(root / ".git/objects"))
    offset = store.packs[0].index.object_offset(bytes.fromhex(oid.decode()))
    store.close()
    raw = bytearray(pack.read_bytes())
    raw[offset + 200_000] ^= 0x55  # inside the blob's deflate stream
    pack.chmod(0o644)
    pack.write_bytes(bytes(raw))
    with pytest.raises(HistoryError) as caught:
        copy_blob(DiskObjectStore(str(root / ".git/objects")), oid, io.BytesIO(), limit=2**30)
    assert caught.value.reason == "CorruptObject"


def test_the_import_hashes_a_large_blob_in_slices_and_git_agrees_with_its_index(
        tmp_path, monkeypatch):
    """A 3 MiB blob (no delta's base) is never inflated whole by the import: not by the
    stream copier, not by the indexer; and git's own verify-pack and fsck accept the
    index written from the streamed ids and CRCs."""
    from giter_agent.history import pack_index

    whole = []
    real = pack_index.BoundedIndexer._resolve_object

    def resolve(self, offset, type_num, base):
        unpacked = real(self, offset, type_num, base)
        whole.append(sum(map(len, unpacked.obj_chunks or [])))
        return unpacked

    monkeypatch.setattr(pack_index.BoundedIndexer, "_resolve_object", resolve)
    streamed = []
    real_large = pack_index.BoundedIndexer._large

    def large(self, offset, type_num, base, keep):
        made = real_large(self, offset, type_num, base, keep)
        if made is not None:
            streamed.append(offset)
        return made

    monkeypatch.setattr(pack_index.BoundedIndexer, "_large", large)
    root = tmp_path / "w"
    run("git", "init", "-q", "-b", "main", root)
    data = os.urandom(3 * 2**20 + 5)
    (root / "big.bin").write_bytes(data)
    (root / "small.txt").write_text("small\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "one")
    git(root, "bundle", "create", "-q", str(tmp_path / "one.bundle"), "main")
    device = tmp_path / "device.git"
    with History(device, Caps()) as history:
        with history.quarantine(tmp_path / "one.bundle") as q:
            q.promote()
        history.set_ref(b"refs/heads/main", None, git(root, "rev-parse", "main").strip())
    assert whole and max(whole) < 2**20  # commits, trees, the small file: never the blob
    assert streamed
    for idx in (device / "objects/pack").glob("*.idx"):
        run("git", "verify-pack", idx)  # every id and CRC32 the index holds is right
    run("git", "--git-dir", device, "fsck", "--strict")
    blob = git(root, "rev-parse", "main:big.bin").decode().strip()
    assert run("git", "--git-dir", device, "cat-file", "blob", blob).stdout == data
