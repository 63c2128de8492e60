"""Index an incoming pack with memory bounded by the largest object, under the sync's budget.

dulwich resolves a pack's deltas depth first and keeps every base that still has a
pending child alive on its work list; a few kilobytes of deltas that fan out at every
level of a chain of 32 MiB results then hold one 32 MiB base per level (hundreds of
megabytes on a board). Its ``add_thin_pack`` also re-reads every object afterwards, with
its own lenient parsers and no deadline. Here the work list holds pack offsets only;
bases live in a cache capped in bytes (``cache_bytes``), and a base that was evicted is
rebuilt from its chain when a child needs it, exactly as git's index-pack does. Every
delta applied, indexing or rebuilding, checks the sync's ``Budget``, so the extra CPU an
evicting structure costs is bounded in time while the memory is bounded in bytes.

No object over ``STREAM_BYTES`` is held whole either (an artifact of hundreds of
megabytes, or a delta of one): the stream copier only inflates to find where each
object ends, keeping nothing (dulwich's keeps every compressed and inflated chunk of the
object). The indexer then resolves such an object with ``blob_stream``'s resolver, the
one that lays a deltified artifact down: inflated, or its delta applied to its base, in
64 KiB slices (``os.pread``: no page of the mapped pack is touched) into its id and
CRC32, and, when a delta builds on it, into an unnamed temp file (mode 0600) in the
quarantine's own directory; a delta on it reads its copies from that file. Spooled bases
are capped in bytes on disk like the cache in RAM, each is dropped once its last child
is resolved, and an evicted one is rebuilt from its chain the same way. A thin pack's
large base is copied out of the store by ``blob_stream.copy_blob`` and appended to the
pack compressed slice by slice. A result over ``max_object_bytes`` is refused from the
delta's header before anything of it is built. So an import costs a few slices of the
largest object in memory, and temp files on disk.

Objects are not parsed here: the import gate (``history.store``) parses what it walks
with the project's strict parsers. Called by ``giter_agent.history.store`` only.
"""

from __future__ import annotations

import binascii
import mmap
import os
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import IO, Any

from dulwich.file import GitFile
from dulwich.object_store import DiskObjectStore
from dulwich.objects import RawObjectID, object_header
from dulwich.pack import (
    OFS_DELTA,
    REF_DELTA,
    PackData,
    PackIndexEntry,
    PackIndexer,
    PackStreamCopier,
    ResolveExtRefFn,
    UnpackedObject,
    iter_sha1,
    read_pack_header,
    take_msb_bytes,
    write_pack_index,
)

from giter_agent.core.budget import Budget
from giter_agent.core.errors import BundleError
from giter_agent.history import blob_stream, thin_bases

# A base's key: its pack offset, or ("ext", sha) for a thin pack's base outside it.
_Key = int | tuple[str, bytes]

# An object larger than this (or a delta on a base larger than this) is resolved in
# slices: into its hash, and into a temp file when a delta builds on it. Smaller ones
# take dulwich's faster in-memory path. (blob_stream.SMALL_BASE, its twin on the apply
# side, keeps bases up to the same size in memory.)
STREAM_BYTES = 1 << 20
_SLICE = 1 << 16
# Drop the mapped pack's pages from RSS after reading this much through them.
DROP_PAGES_BYTES = 8 << 20


def _header(raw: list[int]) -> tuple[int, int]:
    """(type, size) from a pack entry header's bytes."""
    kind, size, shift = (raw[0] >> 4) & 7, raw[0] & 0x0F, 4
    for byte in raw[1:]:
        size |= (byte & 0x7F) << shift
        shift += 7
    return kind, size


def _ofs_back(raw: list[int]) -> int:
    back = raw[0] & 0x7F
    for byte in raw[1:]:
        back = ((back + 1) << 7) | (byte & 0x7F)
    return back


class LeanCopier(PackStreamCopier):
    """dulwich's stream copier without keeping any object's data.

    Copying only needs to know where each object ends (to find the next) and what the
    indexer records (offset, type, delta base); the data is read again from the file
    when indexing. dulwich's ``unpack_object`` keeps every compressed and inflated chunk
    of the object meanwhile, twice its size for a large blob.
    """

    def read_objects(self, compute_crc32: bool = False) -> Iterator[UnpackedObject]:
        _version, self._num_objects = read_pack_header(self.read)
        for _ in range(self._num_objects):
            offset = self.offset
            raw, _crc = take_msb_bytes(self.read)
            kind, size = _header(raw)
            base: int | bytes | None = None
            if kind == OFS_DELTA:
                base = _ofs_back(take_msb_bytes(self.read)[0])
            elif kind == REF_DELTA:
                base = self.read(self._hash_size)
            unused = self._skip_zlib(size)
            buf = BytesIO()
            buf.write(unused)
            buf.write(self._rbuf.read())
            buf.seek(0)
            self._rbuf = buf
            unpacked = UnpackedObject(kind, delta_base=base, decomp_len=size,
                                      hash_func=self.hash_func)
            unpacked.offset = offset
            yield unpacked
        if self._buf_len() < self._hash_size:
            self.read(self._hash_size)
        from dulwich.errors import ChecksumMismatch

        trailer = bytes(bytearray(self._trailer))
        if trailer != self.sha.digest():
            raise ChecksumMismatch(trailer.hex(), self.sha.hexdigest())

    def _skip_zlib(self, size: int) -> bytes:
        """Inflate one object into nothing; the bytes read past its end."""
        z = zlib.decompressobj()
        done = 0
        while True:
            add = self.recv(_SLICE)
            if not add:
                raise zlib.error("EOF before end of zlib stream")
            while add:
                out = z.decompress(add, _SLICE)
                done += len(out)
                if done > size:
                    raise zlib.error("decompressed data exceeds expected size")
                if z.eof:
                    if done != size:
                        raise zlib.error("decompressed data does not match expected size")
                    return z.unused_data
                add = z.unconsumed_tail


def _length(chunks: bytes | list[bytes]) -> int:
    return len(chunks) if isinstance(chunks, bytes) else sum(map(len, chunks))


class _Spooled:
    """An object built on disk: an unnamed temp file in the quarantine, and its size."""

    __slots__ = ("fh", "size")

    def __init__(self, fh: IO[bytes], size: int) -> None:
        self.fh, self.size = fh, size

    def close(self) -> None:
        self.fh.close()


# What resolving an object gives: its content in memory (small), or on disk (large).
_Built = bytes | list[bytes] | _Spooled
_RAM = bytes | list[bytes]


def _close(built: _Built | None) -> None:
    if isinstance(built, _Spooled):
        built.close()


class BoundedIndexer(PackIndexer):
    """dulwich's ``PackIndexer`` with a byte-capped base cache instead of a growing stack,
    and every object over ``STREAM_BYTES`` resolved through files on disk."""

    def __init__(self, file_obj: Any, hash_func: Any, *,
                 resolve_ext_ref: ResolveExtRefFn,
                 budget: Budget, cache_bytes: int, store: Any = None,
                 scratch: Path | None = None, max_object_bytes: int | None = None,
                 spool_bytes: int | None = None) -> None:
        super().__init__(file_obj, hash_func, resolve_ext_ref=resolve_ext_ref)
        self._budget = budget
        self._cache_bytes = cache_bytes
        self._cache: OrderedDict[_Key, _RAM] = OrderedDict()
        self._cached = 0
        # Large bases, spooled to ``scratch``; capped in bytes on disk like the cache in
        # RAM, and each dropped as soon as its last child is resolved (``_uses``).
        self._store = store  # the store thin-pack bases are read from (with alternates)
        self._scratch = scratch
        self._max_object = max_object_bytes
        self._spool_bytes = 2 * cache_bytes if spool_bytes is None else spool_bytes
        self._disk: OrderedDict[_Key, _Spooled] = OrderedDict()
        self._on_disk = 0
        self._uses: dict[_Key, int] = {}
        # How to rebuild a base that has children: (its own base key or None, its type).
        self._recipe: dict[_Key, tuple[_Key | None, int]] = {}
        self.rebuilds = 0  # deltas re-applied to rebuild evicted bases (tests count them)
        self.peak_cached = 0
        self.streamed = 0  # large objects resolved in slices, never whole (tests count them)
        self.spooled = 0  # of which built into a temp file, being a delta's base
        self.peak_on_disk = 0
        self._fd = file_obj.fileno()
        self._touched = 0  # bytes read through the pack's mapping since pages were dropped

    def close(self) -> None:
        """Close (so remove) every spooled base; the indexer is done."""
        while self._disk:
            _, spooled = self._disk.popitem()
            spooled.close()
        self._on_disk = 0

    # -- the byte-capped caches ----------------------------------------------------
    def _put(self, key: _Key, built: _Built) -> None:
        if isinstance(built, _Spooled):
            self._put_disk(key, built)
            return
        if key in self._cache:
            self._cache.move_to_end(key)
            return
        self._cache[key] = built
        self._cached += _length(built)
        # Evict oldest first, but never the entry just put: its child needs it next.
        while self._cached > self._cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached -= _length(old)
        self.peak_cached = max(self.peak_cached, self._cached)

    def _put_disk(self, key: _Key, built: _Spooled) -> None:
        old = self._disk.pop(key, None)
        if old is not None and old is not built:
            self._on_disk -= old.size
            old.close()
        elif old is not None:
            self._on_disk -= old.size
        self._disk[key] = built
        self._on_disk += built.size
        while self._on_disk > self._spool_bytes and len(self._disk) > 1:
            _, evicted = self._disk.popitem(last=False)
            self._on_disk -= evicted.size
            evicted.close()
        self.peak_on_disk = max(self.peak_on_disk, self._on_disk)

    def _release(self, key: _Key | None) -> None:
        """One child of ``key`` is resolved; a spooled base with none left goes."""
        if key is None or key not in self._uses:
            return
        self._uses[key] -= 1
        if self._uses[key] > 0:
            return
        del self._uses[key]
        spooled = self._disk.pop(key, None)
        if spooled is not None:
            self._on_disk -= spooled.size
            spooled.close()

    def _cached_base(self, key: _Key) -> _Built | None:
        for cache in (self._cache, self._disk):
            found = cache.get(key)
            if found is not None:
                cache.move_to_end(key)
                return found
        return None

    def _base(self, key: _Key) -> _Built:
        cached = self._cached_base(key)
        if cached is not None:
            return cached
        # Walk down the recipes to something cached (or a whole object), then forward.
        chain: list[_Key] = []
        k: _Key | None = key
        while k is not None and self._cached_base(k) is None:
            chain.append(k)
            k = None if isinstance(k, tuple) else self._recipe[k][0]
        built: _Built | None = self._cached_base(k) if k is not None else None
        owned = False  # `built` is an intermediate result of this rebuild, not cached
        try:
            for step in reversed(chain):
                self._budget.check()
                made: _Built | None
                if isinstance(step, tuple):
                    made = self._ext(step[1])[1]
                else:
                    self.rebuilds += 1
                    made = self._make(step, self._recipe[step][1], built, keep=True)[1]
                assert made is not None  # kept: it was asked for
                if owned:
                    _close(built)
                built, owned = made, True
        except BaseException:
            if owned:
                _close(built)
            raise
        assert built is not None
        self._put(key, built)
        return built

    # -- the walk (replacing DeltaChainIterator's) --------------------------------
    def _ext(self, sha: bytes) -> tuple[int, _Built]:
        """A thin pack's base from the store: a large blob is copied to a temp file by
        the one blob streamer, anything else read whole. KeyError when nobody has it."""
        assert self._resolve_ext_ref is not None
        size = thin_bases.large_blob(self._store, sha, STREAM_BYTES)
        if not size:
            return self._resolve_ext_ref(RawObjectID(sha))
        import tempfile  # a large base only

        fh = tempfile.TemporaryFile(dir=self._scratch)  # noqa: SIM115 - a _Spooled closes it
        try:
            blob_stream.copy_blob(self._store, sha.hex().encode(), fh, limit=size,
                                  scratch=self._scratch)
        except BaseException:
            fh.close()
            raise
        self.spooled += 1
        return 3, _Spooled(fh, size)

    def _walk_all_chains(self) -> Iterator[PackIndexEntry]:
        for offset, type_num in self._full_ofs:
            yield from self._walk(offset, type_num, None)
        yield from self._walk_ref_chains()
        if self._pending_ofs:
            from dulwich.errors import ApplyDeltaError

            raise ApplyDeltaError("pack has deltas whose base offset is no object")

    def _walk_ref_chains(self) -> Iterator[PackIndexEntry]:
        for base_sha in sorted(self._pending_ref):
            if base_sha not in self._pending_ref:
                continue
            try:
                type_num, built = self._ext(base_sha)
            except KeyError:
                continue  # in this pack after all, or never resolvable (checked below)
            key: _Key = ("ext", base_sha)
            self._ext_refs.append(RawObjectID(base_sha))
            pending = self._pending_ref.pop(base_sha)
            self._uses[key] = len(pending)
            self._put(key, built)
            del built
            for offset in pending:
                yield from self._walk(offset, type_num, key)
        self._ensure_no_pending()

    def _walk(self, offset: int, type_num: int, base_key: _Key | None
              ) -> Iterator[PackIndexEntry]:
        todo: list[tuple[int, int, _Key | None]] = [(offset, type_num, base_key)]
        while todo:
            self._budget.check()
            offset, type_num, base_key = todo.pop()
            # Keep what is built when a delta in this pack builds on it: known for an
            # offset delta; a reference delta on it (rare in a pack) shows only once
            # its id is known, and then it is built again from the base still held.
            keep = offset in self._pending_ofs
            base = None if base_key is None else self._base(base_key)
            entry, built = self._make(offset, type_num, base, keep)
            yield entry
            children = [*self._pending_ofs.pop(offset, []),
                        *self._pending_ref.pop(entry[0], [])]
            if children and built is None:
                built = self._make(offset, type_num, base, True)[1]
            del base
            self._release(base_key)
            if children:
                assert built is not None
                self._recipe[offset] = (base_key, type_num)
                self._uses[offset] = len(children)
                self._put(offset, built)
                todo.extend((child, type_num, offset) for child in children)
            else:
                _close(built)
            del built

    def _make(self, offset: int, type_num: int, base: _Built | None, keep: bool
              ) -> tuple[PackIndexEntry, _Built | None]:
        """Resolve the object at ``offset`` (on ``base`` when a delta): its index entry,
        and its content when ``keep`` (None otherwise, for a large one)."""
        large = self._large(offset, type_num, base, keep)
        if large is not None:
            return large
        assert not isinstance(base, _Spooled)
        unpacked: UnpackedObject = self._resolve_object(offset, type_num, base)
        self._touched += unpacked.decomp_len or 0
        if self._touched > DROP_PAGES_BYTES:
            self._drop_pages()
        assert unpacked.obj_chunks is not None
        return self._result(unpacked), unpacked.obj_chunks

    def _large(self, offset: int, type_num: int, base: _Built | None, keep: bool
               ) -> tuple[PackIndexEntry, _Built | None] | None:
        """Resolve the object at ``offset`` in slices when it, or its base, is over
        ``STREAM_BYTES``: inflated, or applied to its base (in memory or on disk), into
        its hash and CRC, and into a temp file only when ``keep`` (a delta's base).
        Never whole in memory. None for a small object on a small base: dulwich's
        in-memory path is faster for those."""
        fh = blob_stream.PreadFile(self._fd)
        what = f"pack entry at {offset}".encode()
        _kind, size, data, _ref = blob_stream.entry_header(fh, offset, what)  # type: ignore[arg-type]
        result = size if base is None else blob_stream.delta_sizes(fh, data, what)[1]  # type: ignore[arg-type]
        if result <= STREAM_BYTES and not isinstance(base, _Spooled):
            return None
        if self._max_object is not None and result > self._max_object:
            # Refused from the headers, before a byte of it is built or written.
            raise BundleError(f"{what.decode()} builds an object of {result} bytes, over "
                              f"max_object_bytes={self._max_object}", reason="TooLarge")
        if result == 0 and type_num != 3:
            from dulwich.errors import ApplyDeltaError

            raise ApplyDeltaError(f"delta resolved to empty payload for type {type_num}")
        sha = self.hash_func()
        sha.update(object_header(type_num, result))
        tmp, write, done = blob_stream.spool(self._scratch, result) if keep else \
            (b"", None, None)
        budget = self._budget
        seen = 0

        def out(chunk: bytes) -> None:
            nonlocal seen
            sha.update(chunk)
            if write is not None:
                write(chunk)
            seen += len(chunk)
            if seen >= STREAM_BYTES:
                seen = 0
                budget.check()

        crc = binascii.crc32(os.pread(self._fd, data - offset, offset))
        try:
            if base is None:
                crc = blob_stream.inflate(fh, data, size, out, what, crc)  # type: ignore[arg-type]
            else:
                if isinstance(base, _Spooled):
                    src: blob_stream.Base = base.fh
                    base_size = base.size
                else:
                    src = base if isinstance(base, bytes) else b"".join(base)
                    base_size = len(src)
                _done, crc = blob_stream.apply_delta(fh, data, src, base_size, out,  # type: ignore[arg-type]
                                                     what, crc)
        except BaseException:
            if not isinstance(tmp, bytes):
                tmp.close()
            raise
        self.streamed += 1
        built: _Built | None = None
        if done is not None:
            made = done()
            if isinstance(made, bytes):
                built = made
            else:
                self.spooled += 1
                built = _Spooled(made, result)
        return (RawObjectID(sha.digest()), offset, crc & 0xFFFFFFFF), built

    def _drop_pages(self) -> None:
        """Let go of the pack pages read so far through dulwich's mapping of the whole
        pack: they stay in the page cache, but no longer count in this process's RSS,
        so a first sync of a large pack does not grow with the pack."""
        self._touched = 0
        contents = getattr(self, "_contents", None)
        if isinstance(contents, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
            contents.madvise(mmap.MADV_DONTNEED)


def add_pack(store: DiskObjectStore, read_all: Callable[[int], bytes],
             read_some: Callable[[int], bytes], *, budget: Budget, cache_bytes: int,
             max_object_bytes: int | None = None) -> BoundedIndexer:
    """Copy a (thin) pack stream into ``store``, index it and complete it with its bases.

    The pack lands under ``store``'s pack directory only once indexed and completed; on
    any error the temp file is removed. Objects over ``STREAM_BYTES`` are resolved
    through unnamed temp files in ``store``'s own directory (the quarantine), each
    refused first when over ``max_object_bytes``. Returns the indexer (its counters, for
    tests).
    """
    from giter_agent.core.durable import scratch_file  # an indexed bundle only

    fd, tmp = scratch_file(store.path, "tmp_pack_")
    path = Path(tmp)
    indexer: BoundedIndexer | None = None
    try:
        with os.fdopen(fd, "w+b") as f:
            indexer = BoundedIndexer(f, store.object_format.hash_func,
                                     resolve_ext_ref=store.get_raw, budget=budget,
                                     cache_bytes=cache_bytes, store=store,
                                     scratch=Path(store.path),
                                     max_object_bytes=max_object_bytes)
            copier = LeanCopier(store.object_format.hash_func, read_all, read_some, f,
                                delta_iter=indexer)  # type: ignore[arg-type]
            copier.verify(progress=budget.progress)
            f.flush()
            f.seek(0)
            with PackData(str(path), file=f, object_format=store.object_format) as data:
                indexer.set_pack_data(data)
                entries = []
                for entry in indexer:
                    entries.append(entry)
                indexer.close()
                ext_refs = set(indexer.ext_refs())
            pack_sha, extra = thin_bases.extend_pack(f, ext_refs, store, budget,
                                                     over=STREAM_BYTES)
            f.flush()
            os.fsync(f.fileno())
        entries.extend(extra)
        entries.sort()
        base = Path(store.pack_dir) / f"pack-{iter_sha1(e[0] for e in entries).decode()}"
        os.replace(path, base.with_suffix(".pack"))
        with GitFile(str(base.with_suffix(".idx")), "wb", fsync=True) as index:
            write_pack_index(index, entries, pack_sha)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        if indexer is not None:
            indexer.close()
    assert indexer is not None
    return indexer
