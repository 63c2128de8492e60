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

Large undeltified objects are never held whole either (an artifact of hundreds of
megabytes): the stream copier only inflates to find where each object ends, keeping
nothing (dulwich's keeps every compressed and inflated chunk of the object), and an
object above ``STREAM_BYTES`` that is no delta's base gets its id and CRC computed from
the pack file in slices (``os.pread``: no page of the mapped pack is touched). So an
import costs the largest *delta base or delta result* in memory, not the largest object.

Objects are not parsed here: the import gate (``history.store``) parses what it walks
with the project's strict parsers. Called by ``giter_agent.history.store`` only.
"""

from __future__ import annotations

import binascii
import mmap
import os
import tempfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

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
    extend_pack,
    iter_sha1,
    take_msb_bytes,
    write_pack_index,
)

from giter_agent.core.budget import Budget

# A base's key: its pack offset, or ("ext", sha) for a thin pack's base outside it.
_Key = int | tuple[str, bytes]

# An undeltified object larger than this that is no delta's base is hashed from the pack
# file in slices instead of inflated whole.
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
        from dulwich.pack import read_pack_header

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


class BoundedIndexer(PackIndexer):
    """dulwich's ``PackIndexer`` with a byte-capped base cache instead of a growing stack."""

    def __init__(self, file_obj: Any, hash_func: Any, *,
                 resolve_ext_ref: ResolveExtRefFn,
                 budget: Budget, cache_bytes: int) -> None:
        super().__init__(file_obj, hash_func, resolve_ext_ref=resolve_ext_ref)
        self._budget = budget
        self._cache_bytes = cache_bytes
        self._cache: OrderedDict[_Key, bytes | list[bytes]] = OrderedDict()
        self._cached = 0
        # How to rebuild a base that has children: (its own base key or None, its type).
        self._recipe: dict[_Key, tuple[_Key | None, int]] = {}
        self.rebuilds = 0  # deltas re-applied to rebuild evicted bases (tests count them)
        self.peak_cached = 0
        self.streamed = 0  # large objects hashed from the file in slices (tests count them)
        self._fd = file_obj.fileno()
        self._touched = 0  # bytes read through the pack's mapping since pages were dropped

    # -- the byte-capped cache -----------------------------------------------------
    def _put(self, key: _Key, chunks: bytes | list[bytes]) -> None:
        if key in self._cache:
            self._cache.move_to_end(key)
            return
        self._cache[key] = chunks
        self._cached += _length(chunks)
        # Evict oldest first, but never the entry just put: its child needs it next.
        while self._cached > self._cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached -= _length(old)
        self.peak_cached = max(self.peak_cached, self._cached)

    def _base(self, key: _Key) -> bytes | list[bytes]:
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        # Walk down the recipes to something cached (or a whole object), then forward.
        chain: list[_Key] = []
        k: _Key | None = key
        while k is not None and k not in self._cache:
            chain.append(k)
            k = None if isinstance(k, tuple) else self._recipe[k][0]
        chunks: bytes | list[bytes] | None = self._cache[k] if k is not None else None
        for step in reversed(chain):
            self._budget.check()
            if isinstance(step, tuple):
                chunks = self._ext(step[1])[1]
            else:
                self.rebuilds += 1
                chunks = self._resolve_object(step, self._recipe[step][1], chunks).obj_chunks
        assert chunks is not None
        self._put(key, chunks)
        return chunks

    # -- the walk (replacing DeltaChainIterator's) --------------------------------
    def _ext(self, sha: bytes) -> tuple[int, bytes | list[bytes]]:
        assert self._resolve_ext_ref is not None
        return self._resolve_ext_ref(RawObjectID(sha))

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
                type_num, _ = self._ext(base_sha)
            except KeyError:
                continue  # in this pack after all, or never resolvable (checked below)
            key: _Key = ("ext", base_sha)
            self._ext_refs.append(RawObjectID(base_sha))
            for offset in self._pending_ref.pop(base_sha):
                yield from self._walk(offset, type_num, key)
        self._ensure_no_pending()

    def _walk(self, offset: int, type_num: int, base_key: _Key | None
              ) -> Iterator[PackIndexEntry]:
        todo: list[tuple[int, int, _Key | None]] = [(offset, type_num, base_key)]
        while todo:
            self._budget.check()
            offset, type_num, base_key = todo.pop()
            if base_key is None and offset not in self._pending_ofs:
                entry = self._stream(offset)
                if entry is not None and entry[0] not in self._pending_ref:
                    yield entry
                    continue
            base = None if base_key is None else self._base(base_key)
            if base_key is not None and base is not None and offset not in self._pending_ofs:
                entry = self._stream_delta(offset, type_num, base_key, base)
                if entry is not None and entry[0] not in self._pending_ref:
                    del base
                    yield entry
                    continue
            unpacked: UnpackedObject = self._resolve_object(offset, type_num, base)
            del base
            self._touched += unpacked.decomp_len or 0
            if self._touched > DROP_PAGES_BYTES:
                self._drop_pages()
            yield self._result(unpacked)
            children = [*self._pending_ofs.pop(offset, []),
                        *self._pending_ref.pop(unpacked.sha(), [])]
            if children:
                assert unpacked.obj_chunks is not None and unpacked.obj_type_num is not None
                self._recipe[offset] = (base_key, unpacked.obj_type_num)
                self._put(offset, unpacked.obj_chunks)
                todo.extend((child, unpacked.obj_type_num, offset) for child in children)
            del unpacked


    def _stream_delta(self, offset: int, type_num: int, base_key: _Key,
                      base: bytes | list[bytes]) -> PackIndexEntry | None:
        """(id, offset, crc32) of the delta at ``offset`` whose result is large and no
        delta's base: applied to its (cached) base into the hash, slice by slice, never
        built whole. None when the result is small enough to resolve as usual."""
        from giter_agent.history import blob_stream

        head = os.pread(self._fd, 64, offset)
        i = 0
        while head[i] & 0x80:
            i += 1
        kind, _size = _header(list(head[:i + 1]))
        i += 1
        if kind == OFS_DELTA:
            while head[i] & 0x80:
                i += 1
            i += 1
        else:
            i += 20
        fh = blob_stream.PreadFile(self._fd)
        what = f"pack entry at {offset}".encode()
        _base_size, result = blob_stream.delta_sizes(fh, offset + i, what)  # type: ignore[arg-type]
        if result <= STREAM_BYTES:
            return None
        if not isinstance(base, bytes):
            base = b"".join(base)
            self._cache[base_key] = base  # joined once, in place of its chunks
        sha = self.hash_func()
        sha.update(object_header(type_num, result))
        size, crc = blob_stream.apply_delta(fh, offset + i, base, sha.update,  # type: ignore[arg-type]
                                            what, binascii.crc32(head[:i]))
        if size != result:
            raise zlib.error("delta result does not match its declared size")
        self.streamed += 1
        return RawObjectID(sha.digest()), offset, crc

    def _drop_pages(self) -> None:
        """Let go of the pack pages read so far through dulwich's mapping of the whole
        pack: they stay in the page cache, but no longer count in this process's RSS,
        so a first sync of a large pack does not grow with the pack."""
        self._touched = 0
        contents = getattr(self, "_contents", None)
        if isinstance(contents, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
            contents.madvise(mmap.MADV_DONTNEED)

    def _stream(self, offset: int) -> PackIndexEntry | None:
        """(id, offset, crc32) of the undeltified object at ``offset``, hashed from the
        pack file in slices; None when it is small enough to inflate as usual."""
        head = os.pread(self._fd, 32, offset)
        i = 0
        while head[i] & 0x80:
            i += 1
        kind, size = _header(list(head[:i + 1]))
        if size <= STREAM_BYTES:
            return None
        sha = self.hash_func()
        sha.update(object_header(kind, size))
        crc = binascii.crc32(head[:i + 1])
        z = zlib.decompressobj()
        pos, done = offset + i + 1, 0
        while not z.eof:
            self._budget.check()
            raw = os.pread(self._fd, _SLICE, pos)
            if not raw:
                raise zlib.error("EOF before end of zlib stream")
            add = raw
            while add and not z.eof:
                out = z.decompress(add, _SLICE)
                sha.update(out)
                done += len(out)
                if done > size:
                    raise zlib.error("decompressed data exceeds expected size")
                add = z.unconsumed_tail
            used = len(raw) - len(z.unused_data)  # the compressed bytes of this entry
            crc = binascii.crc32(raw[:used], crc)
            pos += used
        if done != size:
            raise zlib.error("decompressed data does not match expected size")
        self.streamed += 1
        return RawObjectID(sha.digest()), offset, crc & 0xFFFFFFFF


def add_pack(store: DiskObjectStore, read_all: Callable[[int], bytes],
             read_some: Callable[[int], bytes], *, budget: Budget, cache_bytes: int
             ) -> BoundedIndexer:
    """Copy a (thin) pack stream into ``store``, index it and complete it with its bases.

    The pack lands under ``store``'s pack directory only once indexed and completed; on
    any error the temp file is removed. Returns the indexer (its counters, for tests).
    """
    fd, tmp = tempfile.mkstemp(dir=store.path, prefix="tmp_pack_")
    path = Path(tmp)
    try:
        with os.fdopen(fd, "w+b") as f:
            indexer = BoundedIndexer(f, store.object_format.hash_func,
                                     resolve_ext_ref=store.get_raw, budget=budget,
                                     cache_bytes=cache_bytes)
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
                ext_refs = set(indexer.ext_refs())
            pack_sha, extra = extend_pack(f, ext_refs, get_raw=store.get_raw,
                                          object_format=store.object_format)
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
    return indexer
