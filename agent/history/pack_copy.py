"""Copy entries of existing packs into a new pack without inflating them.

A pack entry is a small header (type, inflated size, and for a delta its base) followed
by a zlib stream. The stream of a whole object or of a reference delta does not depend
on where it sits, so a merge copies those entries byte for byte, in 64 KiB slices: an
artifact of hundreds of MiB costs one slice of RAM, not the object and its
recompression (what dulwich's ``iter_unpacked_subset`` + ``write_pack_data`` hold).

- An entry's extent is the gap to the next entry of its pack (a pack is contiguous), and
  its bytes are checked against the CRC32 the source index holds (v2 index) before the
  new pack is named; an index without CRCs (v1) has each stream inflated slice by slice
  to check it ends where the next entry starts. A mismatch is ``HistoryError``
  ``CorruptObject`` and the caller's temp pack is removed: nothing is replaced.
- An offset delta gets a new header with the distance to its base's new offset (its
  stream is copied): a pack lists a base before its deltas and entries are copied in
  pack order, so the base (from this pack, or from a smaller one that also held it) is
  always written first.
- A reference delta is copied as it is when its base is in the output (git accepts a
  reference to any object of the same pack).
- A delta (either kind) whose base is *not* in the output (``promote`` dropping the
  junk a pack was re-made with) is resolved and written whole: the output must not be a
  thin pack. Only that rare case inflates an object.

The CRC32 of each new entry is computed over what is written, the pack's trailing
SHA-1 over the whole file. Called by ``history.packs`` (``consolidate``) and
``history.quarantine`` (``promote`` of a pack holding junk).
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, BinaryIO

from giter_agent.core.errors import HistoryError, Reason
from giter_agent.history.blob_stream import CHUNK, OFS_DELTA, REF_DELTA, entry_header

_TRAILER = 20  # SHA-1 pack checksum

Entries = dict[bytes, tuple[int, int]]  # binary id -> (offset, crc32), as write_pack_data


def _corrupt(pack: Any, why: str) -> HistoryError:
    return HistoryError(f"pack {os.path.basename(pack._data_path)}: {why}",
                        reason=Reason.CorruptObject)


class _Out:
    """The new pack: writes through ``write``, hashing and counting what it writes."""

    def __init__(self, write: Callable[[bytes], Any]) -> None:
        self._write = write
        self.sha = hashlib.sha1()
        self.pos = 0

    def write(self, data: bytes) -> None:
        self._write(data)
        self.sha.update(data)
        self.pos += len(data)


def _copy_range(fh: BinaryIO, start: int, end: int, out: _Out, crc_src: int,
                crc_out: int) -> tuple[int, int]:
    """Copy ``fh[start:end]`` to ``out``; the CRC32s ``crc_src`` (the source entry) and
    ``crc_out`` (the new one) continued over those bytes."""
    fh.seek(start)
    left = end - start
    while left:
        data = fh.read(min(CHUNK, left))
        if not data:
            raise EOFError
        out.write(data)
        crc_src = zlib.crc32(data, crc_src)
        crc_out = zlib.crc32(data, crc_out)
        left -= len(data)
    return crc_src, crc_out


def _stream_ends_at(fh: BinaryIO, start: int, end: int) -> bool:
    """Whether the zlib stream at ``start`` is whole and ends exactly at ``end`` (for an
    index without CRCs), inflated slice by slice into nothing."""
    fh.seek(start)
    inflater = zlib.decompressobj()
    left = end - start
    try:
        while left:
            data = fh.read(min(CHUNK, left))
            if not data:
                return False
            left -= len(data)
            inflater.decompress(data, CHUNK)
            while inflater.unconsumed_tail:
                inflater.decompress(inflater.unconsumed_tail, CHUNK)
            if inflater.eof:
                return not left and not inflater.unused_data
    except zlib.error:
        return False
    return inflater.eof


def copy_packs(write: Callable[[bytes], Any], packs: Iterable[Any], ids: set[bytes],
               count: int, store: Any, object_format: Any, *,
               whole: Sequence[Any] = ()) -> tuple[Entries, bytes]:
    """Write a pack of the ``count`` objects ``ids`` (hex) found in ``packs`` (dulwich
    ``Pack``s, each id taken from the first pack holding it) through ``write``; the
    entries and the pack's SHA-1, like ``write_pack_data``. ``store`` serves a delta
    whose base is not in ``ids``, written whole. ``whole``: new objects (dulwich
    ``ShaFile``s, in none of ``packs``) written first, compressed whole; ``count``
    includes them."""
    from dulwich.objects import ObjectID, hex_to_sha, sha_to_hex
    from dulwich.pack import pack_object_header, write_pack_object

    out = _Out(write)
    out.write(b"PACK" + struct.pack(">LL", 2, count))
    entries: Entries = {}
    for obj in whole:
        entries[obj.sha().digest()] = (out.pos, write_pack_object(
            out.write, obj.type_num, obj.as_raw_chunks(), object_format))  # type: ignore[arg-type]
    wanted = {hex_to_sha(ObjectID(sha)) for sha in ids}
    for pack in packs:
        rows = sorted((offset, sha, crc) for sha, offset, crc in pack.index.iterentries())
        by_offset = {offset: sha for offset, sha, _crc in rows}
        end_of_data = os.path.getsize(pack._data_path) - _TRAILER
        with open(pack._data_path, "rb") as fh:
            for i, (offset, sha, crc) in enumerate(rows):
                if sha not in wanted or sha in entries:
                    continue
                end = rows[i + 1][0] if i + 1 < len(rows) else end_of_data
                if not 12 <= offset < end <= end_of_data:
                    raise _corrupt(pack, f"entry of {sha_to_hex(sha).decode()} out of bounds")
                try:
                    kind, size, data_at, base = entry_header(fh, offset, sha_to_hex(sha))
                except IndexError:
                    raise _corrupt(pack, f"bad entry header of {sha_to_hex(sha).decode()}"
                                   ) from None
                hlen = data_at - offset
                if data_at >= end:
                    raise _corrupt(pack, f"bad entry header of {sha_to_hex(sha).decode()}")
                base_sha = by_offset.get(base) if isinstance(base, int) else base
                if kind == OFS_DELTA and base_sha is None:
                    raise _corrupt(pack, f"{sha_to_hex(sha).decode()}: no entry at its base")
                here = out.pos
                if kind in (OFS_DELTA, REF_DELTA) and not (
                        base_sha in entries or (kind == REF_DELTA and base_sha in wanted)):
                    # Its base is dropped: written whole, so the output is never thin.
                    obj = store[sha_to_hex(sha)]
                    entries[sha] = (here, write_pack_object(
                        out.write, obj.type_num, obj.as_raw_chunks(),  # type: ignore[arg-type]
                        object_format))
                    continue
                if kind == OFS_DELTA and base_sha is not None:  # (never None: checked)
                    header = bytes(pack_object_header(
                        OFS_DELTA, here - entries[base_sha][0], size, object_format))
                else:
                    header = None  # a whole object, or a reference delta: copied as it is
                fh.seek(offset)
                head = fh.read(hlen)
                crc_src = zlib.crc32(head)
                if header is None:
                    out.write(head)
                    crc_out = crc_src
                else:
                    out.write(header)
                    crc_out = zlib.crc32(header)
                try:
                    crc_src, crc_out = _copy_range(fh, offset + hlen, end, out, crc_src,
                                                   crc_out)
                except EOFError:
                    raise _corrupt(pack, f"{sha_to_hex(sha).decode()} cut short") from None
                if crc is not None and crc != crc_src:
                    raise _corrupt(pack, f"{sha_to_hex(sha).decode()} does not match its "
                                         "checksum in the index")
                if crc is None and not _stream_ends_at(fh, offset + hlen, end):
                    raise _corrupt(pack, f"{sha_to_hex(sha).decode()} is not a whole "
                                         "compressed stream")
                entries[sha] = (here, crc_out)
    if len(entries) != count:
        raise HistoryError(f"{count - len(entries)} object(s) to merge are in no pack",
                           reason=Reason.MissingObject)
    checksum = out.sha.digest()
    out.write(checksum)
    return entries, checksum

