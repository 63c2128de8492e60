"""Whole objects read straight from a pack's mapping, for the walks that read many small
ones (the trust rule reads every new commit and its root tree).

dulwich's ``Pack.get_raw`` goes through several layers per object (an unpacked-object
record, a streaming inflater fed in chunks, a delta stack, a locked offset cache); for
a commit or a tree of a few hundred bytes that costs several times the inflating
itself. ``PackReader.get_raw`` reads the entry header at the index's offset, inflates
the entry in one call, and applies a delta with dulwich's ``apply_delta`` (its C one when
dulwich was built with it), keeping
recent delta bases in a small cache capped in bytes (a linear history's trees are
chains of deltas of each other).

It is an accelerator, never an authority: whatever it cannot read simply (a base in
another pack, an object larger than ``MAX_OBJECT``, anything odd) is read by dulwich
instead, and the callers that rely on an object (``trust.checked_objects``) hash it
against its id whatever read it.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from typing import Any

try:  # dulwich's C extension, when it was built (a pure-Python install has none)
    from dulwich._pack import apply_delta
except ImportError:  # pragma: no cover - depends on how dulwich was installed
    from dulwich.pack import apply_delta

OFS_DELTA, REF_DELTA = 6, 7
BASE_TYPES = (1, 2, 3, 4)  # commit, tree, blob, tag
MAX_OBJECT = 1 << 20  # larger objects are dulwich's to read (and rarely on this path)
CACHE_BYTES = 4 << 20  # delta bases kept, in bytes


class _Unsimple(Exception):
    """An entry this reader leaves to dulwich."""


class PackReader:
    """``get_raw(hex or binary id) -> (type, bytes)`` for one dulwich ``Pack``; KeyError
    when the pack does not hold it."""

    def __init__(self, pack: Any, cache_bytes: int = CACHE_BYTES) -> None:
        self._pack = pack
        self._index = pack.index
        self._buf = pack.data._buffer()  # the pack file's mapping (dulwich maps it)
        self._cache: OrderedDict[int, tuple[int, bytes]] = OrderedDict()
        self._cached = 0
        self._cache_bytes = cache_bytes

    def get_raw(self, sha: bytes) -> tuple[int, bytes]:
        offset = self._index.object_offset(sha)  # KeyError: not in this pack
        try:
            return self._at(offset, 0)
        except (_Unsimple, zlib.error, ValueError, IndexError, KeyError):
            return self._pack.get_raw(sha)  # dulwich's reading, errors and all

    def _at(self, offset: int, depth: int) -> tuple[int, bytes]:
        hit = self._cache.get(offset)
        if hit is not None:
            self._cache.move_to_end(offset)
            return hit
        if depth > 64:
            raise _Unsimple
        buf = self._buf
        byte = buf[offset]
        type_num = (byte >> 4) & 7
        size = byte & 15
        shift, pos = 4, offset + 1
        while byte & 0x80:
            byte = buf[pos]
            pos += 1
            size |= (byte & 0x7F) << shift
            shift += 7
        if size > MAX_OBJECT:
            raise _Unsimple
        if type_num in BASE_TYPES:
            return type_num, self._inflate(pos, size)
        if type_num == OFS_DELTA:
            byte = buf[pos]
            pos += 1
            back = byte & 0x7F
            while byte & 0x80:
                byte = buf[pos]
                pos += 1
                back = ((back + 1) << 7) | (byte & 0x7F)
            base_offset = offset - back
        elif type_num == REF_DELTA:
            base_offset = self._index.object_offset(bytes(buf[pos:pos + 20]))
            pos += 20
        else:
            raise _Unsimple
        base_type, base = self._at(base_offset, depth + 1)
        result = apply_delta(base, self._inflate(pos, size))
        out = base_type, result if isinstance(result, bytes) else b"".join(result)
        self._keep(base_offset, base_type, base)
        return out

    def _inflate(self, pos: int, size: int) -> bytes:
        # Deflate adds a few bytes to what it cannot shrink: this bound holds the entry.
        end = pos + size + 64 + (size >> 7)
        inflater = zlib.decompressobj()
        data = inflater.decompress(self._buf[pos:end], size + 1)
        if len(data) != size or not inflater.eof:
            raise _Unsimple
        return data

    def _keep(self, offset: int, type_num: int, data: bytes) -> None:
        if offset in self._cache or len(data) > self._cache_bytes // 4:
            return
        self._cache[offset] = (type_num, data)
        self._cached += len(data)
        while self._cached > self._cache_bytes:
            _, (_, old) = self._cache.popitem(last=False)
            self._cached -= len(old)
