"""A thin pack's bases from the store: which are large blobs, and appending them in slices.

A thin pack (an incremental bundle or fetch) holds deltas against objects the device
already has. The indexer (``history.pack_index``) resolves them against those bases and
must then append the bases to the pack, so that it stands alone (neither git nor
dulwich reads a thin pack from disk). dulwich's ``extend_pack`` reads each base whole
and compresses it whole: an artifact update, a delta against the device's copy, would
cost the artifact's size twice in RAM there. Here a base that is a blob over ``over``
bytes is streamed out of the store by ``blob_stream.copy_blob`` (which checks its id)
and deflated slice by slice; anything else (small, or not a blob) is read whole, as
before. A base's size is read from its own entry header first, so the small, deeply
deltified trees of an ordinary sync cost no walk of their chains.

Called by ``history.pack_index`` only.
"""

from __future__ import annotations

import binascii
import os
import zlib
from pathlib import Path
from typing import IO, Any

from dulwich.object_store import DiskObjectStore
from dulwich.objects import RawObjectID
from dulwich.pack import (
    PackIndexEntry,
    compute_file_sha,
    pack_object_header,
    read_pack_header,
    write_pack_header,
    write_pack_object,
)

from giter_agent.core.budget import Budget
from giter_agent.core.errors import HistoryError
from giter_agent.history import blob_stream

_BLOB = 3


def large_blob(store: Any, sha: bytes, over: int) -> int:
    """The size of ``sha`` (binary id) when it is a blob of more than ``over`` bytes in
    ``store`` (or its alternates), else 0: small, not a blob, or not readable from its
    headers (then the whole read that follows decides)."""
    if store is None:
        return 0
    hexsha = sha.hex().encode()
    try:
        if blob_stream.object_size(store, hexsha) <= over:
            return 0
        return blob_stream.blob_size(store, hexsha)  # walks the chain: a blob?
    except HistoryError:
        return 0


class _Deflating:
    """A writer compressing what it is given into a pack entry's zlib stream, into the
    pack file, its checksum and the entry's CRC32."""

    def __init__(self, f: IO[bytes], sha: Any, crc: int) -> None:
        self._f, self._sha, self.crc = f, sha, crc
        self._z = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION)

    def _out(self, data: bytes) -> None:
        if data:
            self._f.write(data)
            self._sha.update(data)
            self.crc = binascii.crc32(data, self.crc)

    def write(self, data: bytes) -> None:
        self._out(self._z.compress(data))

    def finish(self) -> int:
        self._out(self._z.flush())
        return self.crc & 0xFFFFFFFF


def extend_pack(f: IO[bytes], ext_refs: set[RawObjectID], store: DiskObjectStore,
                budget: Budget, *, over: int) -> tuple[bytes, list[PackIndexEntry]]:
    """Append ``ext_refs`` (read from ``store``) to the thin pack ``f`` and rewrite its
    header and checksum, as dulwich's ``extend_pack`` does; a blob over ``over`` bytes
    in slices. Returns (the pack's checksum, the appended entries)."""
    fmt = store.object_format
    f.seek(0)
    _version, count = read_pack_header(f.read)
    if ext_refs:
        f.seek(0)
        write_pack_header(f.write, count + len(ext_refs))
        f.flush()
    pack_sha = compute_file_sha(f, hash_func=fmt.hash_func, end_ofs=-fmt.oid_length)
    f.seek(0, os.SEEK_CUR)  # write over the old checksum
    extra: list[PackIndexEntry] = []
    for sha in sorted(ext_refs):
        budget.check()
        offset = f.tell()
        size = large_blob(store, sha, over)
        if not size:
            type_num, raw = store.get_raw(RawObjectID(sha))
            crc = write_pack_object(f.write, type_num, [raw], sha=pack_sha,
                                    object_format=fmt)
        else:
            header = bytes(pack_object_header(_BLOB, None, size, fmt))
            f.write(header)
            pack_sha.update(header)
            out = _Deflating(f, pack_sha, binascii.crc32(header))
            blob_stream.copy_blob(store, sha.hex().encode(), out, limit=size,  # type: ignore[arg-type]
                                  scratch=Path(store.path))
            crc = out.finish()
        extra.append((RawObjectID(sha), offset, crc))
    digest = pack_sha.digest()
    f.write(digest)
    return digest, extra
