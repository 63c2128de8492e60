"""Stream one blob out of the object store to a file, in memory that does not grow with it.

``copy_blob(store, oid, out, limit=...)`` is the one way to lay a large file of the
verified tree down on the device (the ``File`` kind's ``artifact``, and any kind that
lays down content from ``artifacts/``). It never asks dulwich for the object: dulwich
inflates a packed object whole, and resolves a delta with its base and result in RAM.
Here the pack file is read through a plain file handle (no mmap of the pack), in 64 KiB
slices:

- an undeltified packed blob, or a loose one, is inflated slice by slice straight into
  ``out``;
- a deltified blob is resolved along its chain with each intermediate result spooled to
  an unnamed temp file (``O_TMPFILE`` where the filesystem has it, so a crash leaves
  nothing behind) beside the repository: the delta's instructions are read as they
  inflate, a "copy" reads its range from the base on disk, an "insert" is written
  through. Bases of at most ``SMALL_BASE`` bytes stay in memory.

Peak memory is a few slices, whatever the blob's size or its delta chain; disk holds at
most two intermediate results at a time. The git object id is recomputed over what was
written (``blob <size>\\0`` + content) and must equal ``oid``; the declared size is
checked against ``limit`` before the first byte is written. Every refusal is a
``HistoryError``: ``FileTooLarge``, ``CorruptObject`` (a broken pack entry, a delta
that does not fit its base, a different object id), ``UnsafeTreeEntry`` (not a blob),
``MissingObject``. On any error ``out`` holds a partial copy: write it to a temp file
(``core.durable.atomic_writer``) so the target keeps its previous content.

Called by ``history.artifacts`` (the device) and through it by the kinds that lay down
artifacts; and by the import's indexer (``history.pack_index``), which resolves every
large object of an incoming pack with the same pieces: ``inflate`` and ``apply_delta``
(on a base in memory or in a ``spool`` file), and ``copy_blob`` for a thin pack's base
in the store. Nothing else here depends on who calls it.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

from giter_agent.core.errors import HistoryError, Reason
from giter_agent.core.named_tuple import NamedTuple

CHUNK = 1 << 16
SMALL_BASE = 1 << 20  # a delta base up to this size is kept in memory, not spooled
MAX_CHAIN = 4096  # git's default depth is 50; deeper than this is a hostile pack

_BLOB, OFS_DELTA, REF_DELTA = 3, 6, 7
_TYPE_NAMES = {1: "commit", 2: "tree", 3: "blob", 4: "tag"}


def _corrupt(oid: bytes, why: str) -> HistoryError:
    return HistoryError(f"object {oid.decode(errors='replace')}: {why}",
                        reason=Reason.CorruptObject)


class _Entry(NamedTuple):
    """One pack entry (or a loose object) on the way from ``oid`` to its full base."""

    path: str  # the .pack file, or the loose object's file
    offset: int  # where the zlib stream starts (0 for a loose object)
    kind: int  # pack type number; _BLOB etc. for a full object
    size: int  # inflated size of the entry (the delta's own size for a delta)
    loose: bool = False
    # A delta's base: its pack offset (ofs-delta) or binary id (ref-delta); None: a full
    # object (or a loose one).
    base: int | bytes | None = None


class _Inflater:
    """The inflated bytes of one zlib stream in ``fh`` from ``offset``, read in slices.

    ``crc`` (the import's indexer): the CRC32 of the compressed bytes the stream took,
    in ``crc32`` once it has ended."""

    def __init__(self, fh: BinaryIO, offset: int, oid: bytes, *, crc: int | None = None
                 ) -> None:
        fh.seek(offset)
        self._fh, self._oid = fh, oid
        self._z = zlib.decompressobj()
        self._buf = bytearray()
        self.crc32 = crc
        self._last = b""  # the last compressed slice read, its CRC not yet counted

    def _fill(self, n: int) -> None:
        while len(self._buf) < n and not self._z.eof:
            src = self._z.unconsumed_tail
            if not src:
                src = self._fh.read(CHUNK)
                if self.crc32 is not None:
                    self.crc32 = zlib.crc32(self._last, self.crc32)
                    self._last = src
            if not src:
                raise _corrupt(self._oid, "the pack ends inside it")
            try:
                self._buf += self._z.decompress(src, CHUNK)
            except zlib.error as exc:
                raise _corrupt(self._oid, f"does not inflate ({exc})") from None
        if self._z.eof and self.crc32 is not None and self._last is not None:
            used = len(self._last) - len(self._z.unused_data)
            self.crc32 = zlib.crc32(self._last[:used], self.crc32) & 0xFFFFFFFF
            self._last = None  # type: ignore[assignment]

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only at the end of the stream)."""
        self._fill(n)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def exactly(self, n: int) -> bytes:
        data = self.read(n)
        if len(data) != n:
            raise _corrupt(self._oid, "inflates to less than its declared size")
        return data

    def varint(self) -> int:
        """A delta header's size (little-endian base-128)."""
        value = shift = 0
        while True:
            byte = self.exactly(1)[0]
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value
            if shift > 63:
                raise _corrupt(self._oid, "delta header size is too long")

    def finish(self) -> None:
        """The stream must end here: nothing inflates past the declared size."""
        self._fill(1)
        if self._buf:
            raise _corrupt(self._oid, "inflates to more than its declared size")


class _Files:
    """Open pack and loose files for one copy; ``close()`` ends it."""

    def __init__(self) -> None:
        self._open: dict[str, BinaryIO] = {}

    def get(self, path: str) -> BinaryIO:
        fh = self._open.get(path)
        if fh is None:
            fh = self._open[path] = open(path, "rb")  # noqa: SIM115 - closed by close()
        return fh

    def close(self) -> None:
        for fh in self._open.values():
            fh.close()
        self._open.clear()


def _stores(store: Any) -> Iterator[Any]:
    yield store
    yield from getattr(store, "alternates", ())


def entry_header(fh: BinaryIO, offset: int, oid: bytes
                  ) -> tuple[int, int, int, int | bytes | None]:
    """(type, size, data offset, base) of the pack entry at ``offset``; ``base`` is the
    base's pack offset (ofs-delta), its binary id (ref-delta) or None."""
    fh.seek(offset)
    head = fh.read(64)
    if not head:
        raise _corrupt(oid, "its pack entry is past the end of the pack")
    kind, size, shift, i = (head[0] >> 4) & 7, head[0] & 0x0F, 4, 0
    while head[i] & 0x80:
        i += 1
        if i >= len(head) or shift > 63:
            raise _corrupt(oid, "its pack entry header is malformed")
        size |= (head[i] & 0x7F) << shift
        shift += 7
    i += 1
    if kind == REF_DELTA:
        return kind, size, offset + i + 20, head[i:i + 20]
    if kind == OFS_DELTA:
        byte = head[i]
        back = byte & 0x7F
        while byte & 0x80:
            i += 1
            byte = head[i]
            back = ((back + 1) << 7) | (byte & 0x7F)
        if back <= 0 or back > offset:
            raise _corrupt(oid, "its delta base offset is outside the pack")
        return kind, size, offset + i + 1, offset - back
    if kind not in _TYPE_NAMES:
        raise _corrupt(oid, f"its pack entry has type {kind}")
    return kind, size, offset + i, None


def _locate(store: Any, binsha: bytes, files: _Files, oid: bytes) -> _Entry:
    """Where ``binsha`` lives: a pack entry (preferred) or a loose object."""
    for where in _stores(store):
        for pack in getattr(where, "packs", ()):
            try:
                offset = pack.index.object_offset(binsha)
            except KeyError:
                continue
            fh = files.get(pack._data_path)
            kind, size, data, base = entry_header(fh, offset, oid)
            return _Entry(pack._data_path, data, kind, size, base=base)
    hexsha = binsha.hex().encode()
    for where in _stores(store):
        shafile = getattr(where, "_get_shafile_path", None)
        if shafile is None:
            continue
        path = shafile(hexsha)
        if os.path.isfile(path):
            return _loose_entry(files, path, oid)
    raise HistoryError(f"object {oid.decode(errors='replace')} is not in the store",
                       reason=Reason.MissingObject)


def _loose_entry(files: _Files, path: str, oid: bytes) -> _Entry:
    """A loose object: ``<type> <size>\\0`` then the content, all one zlib stream."""
    src = _Inflater(files.get(path), 0, oid)
    header = bytearray()
    while True:
        byte = src.exactly(1)
        if byte == b"\0":
            break
        header += byte
        if len(header) > 32:
            raise _corrupt(oid, "its loose header is malformed")
    name, _, size = bytes(header).partition(b" ")
    kinds = {v.encode(): k for k, v in _TYPE_NAMES.items()}
    if name not in kinds or not size.isdigit():
        raise _corrupt(oid, "its loose header is malformed")
    return _Entry(path, len(header) + 1, kinds[name], int(size), loose=True)


def _open(files: _Files, entry: _Entry, oid: bytes) -> _Inflater:
    if not entry.loose:
        return _Inflater(files.get(entry.path), entry.offset, oid)
    src = _Inflater(files.get(entry.path), 0, oid)
    src.exactly(entry.offset)  # skip the loose header
    return src


def _chain(store: Any, oid: bytes, files: _Files) -> list[_Entry]:
    """From ``oid``'s own entry down to the full object its deltas start from."""
    top = _locate(store, bytes.fromhex(oid.decode("ascii")), files, oid)
    chain = [top]
    while top.base is not None:
        if len(chain) > MAX_CHAIN:
            raise _corrupt(oid, f"its delta chain is deeper than {MAX_CHAIN}")
        if isinstance(top.base, int):
            fh = files.get(top.path)
            kind, size, data, base = entry_header(fh, top.base, oid)
            top = _Entry(top.path, data, kind, size, base=base)
        else:
            top = _locate(store, top.base, files, oid)
        chain.append(top)
    return chain


def _result_size(files: _Files, entry: _Entry, oid: bytes) -> int:
    """The size of the object an entry builds: its own, or its delta's result size."""
    if entry.base is None:
        return entry.size
    src = _open(files, entry, oid)
    src.varint()
    return src.varint()


def blob_size(store: Any, oid: bytes) -> int:
    """The size of blob ``oid``, read from its entry headers without inflating it."""
    files = _Files()
    try:
        chain = _chain(store, oid, files)
        _check_blob(chain[-1], oid)
        return _result_size(files, chain[0], oid)
    finally:
        files.close()


def object_size(store: Any, oid: bytes) -> int:
    """The size of object ``oid`` (of any type), from its own entry's header (and a
    delta's first inflated bytes): its delta chain is not walked. ``HistoryError``
    (``MissingObject``, ``CorruptObject``) when it cannot be read that way."""
    files = _Files()
    try:
        entry = _locate(store, bytes.fromhex(oid.decode("ascii")), files, oid)
        return _result_size(files, entry, oid)
    finally:
        files.close()


def _check_blob(full: _Entry, oid: bytes) -> None:
    if full.kind != _BLOB:
        raise HistoryError(f"object {oid.decode(errors='replace')} is a "
                           f"{_TYPE_NAMES.get(full.kind, 'bad object')}, not a blob",
                           reason=Reason.UnsafeTreeEntry)


class PreadFile:
    """A read-only file over a descriptor with its own position (``os.pread``): reads
    never move the descriptor's shared offset, and never touch a mapping of the file."""

    def __init__(self, fd: int) -> None:
        self._fd, self._pos = fd, 0

    def seek(self, pos: int) -> None:
        self._pos = pos

    def read(self, n: int) -> bytes:
        data = os.pread(self._fd, n, self._pos)
        self._pos += len(data)
        return data


def delta_sizes(fh: BinaryIO, offset: int, oid: bytes) -> tuple[int, int]:
    """(base size, result size) from the start of the delta whose zlib data is at
    ``offset``; only its first bytes are inflated."""
    src = _Inflater(fh, offset, oid)
    return src.varint(), src.varint()


# A delta base: bytes (small) or a seekable spooled file.
Base = bytes | IO[bytes]


def apply_delta(fh: BinaryIO, offset: int, base: Base, base_size: int,
                write: Callable[[bytes], Any], oid: bytes, crc: int) -> tuple[int, int]:
    """Apply the delta whose zlib data is at ``offset`` in ``fh`` to ``base`` (bytes,
    or a spooled file of ``base_size`` bytes), writing the result in slices; (its size,
    the entry's CRC32 continued from ``crc``)."""
    src = _Inflater(fh, offset, oid, crc=crc)
    size = _apply_delta(src, base, base_size, write, oid)
    assert src.crc32 is not None
    return size, src.crc32


def inflate(fh: BinaryIO, offset: int, size: int, write: Callable[[bytes], Any],
            oid: bytes, crc: int) -> int:
    """Inflate the undeltified entry whose zlib data is at ``offset`` in ``fh`` (``size``
    bytes) into ``write``, in slices; the entry's CRC32 continued from ``crc``."""
    src = _Inflater(fh, offset, oid, crc=crc)
    _copy_out(src, size, write, oid)
    assert src.crc32 is not None
    return src.crc32


def _read_base(base: Base, start: int, length: int) -> Iterator[bytes]:
    if isinstance(base, bytes):
        yield memoryview(base)[start:start + length]  # type: ignore[misc]
        return
    base.seek(start)
    while length:
        data = base.read(min(CHUNK, length))
        if not data:
            return
        length -= len(data)
        yield data


def _apply_delta(src: _Inflater, base: Base, base_size: int, write: Callable[[bytes], Any],
                 oid: bytes) -> int:
    """Apply the delta ``src`` to ``base``, writing the result; returns its size."""
    if src.varint() != base_size:
        raise _corrupt(oid, "its delta was made for another base (size differs)")
    size = src.varint()
    done = 0
    while done < size:
        op = src.exactly(1)[0]
        if op & 0x80:
            start = length = 0
            for i in range(4):
                if op & (1 << i):
                    start |= src.exactly(1)[0] << (8 * i)
            for i in range(3):
                if op & (1 << (4 + i)):
                    length |= src.exactly(1)[0] << (8 * i)
            length = length or 0x10000
            if start + length > base_size or done + length > size:
                raise _corrupt(oid, "its delta copies outside its base or result")
            for data in _read_base(base, start, length):
                write(data)
            done += length
        elif op:
            if done + op > size:
                raise _corrupt(oid, "its delta inserts past its result")
            write(src.exactly(op))
            done += op
        else:
            raise _corrupt(oid, "its delta has a reserved opcode 0")
    src.finish()
    return done


def spool(scratch: Path | None, size: int) -> tuple[Base, Callable[[bytes], Any],
                                                    Callable[[], Base]]:
    """Somewhere to build an intermediate result of ``size`` bytes: memory up to
    ``SMALL_BASE``, else an unnamed temp file in ``scratch`` (mode 0600, ``O_TMPFILE``
    where the filesystem has it); (the file or b"", its writer, what gives the result).
    The caller closes a file."""
    if size <= SMALL_BASE:
        parts: list[bytes] = []
        return b"", parts.append, lambda: b"".join(parts)
    import tempfile  # only for a large base: a steady sync reads none

    fh = tempfile.TemporaryFile(dir=scratch)  # noqa: SIM115 - closed by the caller
    return fh, fh.write, lambda: fh


def copy_blob(store: Any, oid: bytes, out: BinaryIO | int, *, limit: int,
              scratch: Path | None = None) -> int:
    """Write blob ``oid`` of ``store`` to ``out`` (a binary file or a descriptor),
    streaming; returns its size.

    ``limit``: the largest size accepted, checked from the headers before anything is
    written (``HistoryError(FileTooLarge)``). ``scratch``: the folder for the temp files
    a deltified blob's chain is resolved through (the repository's; default: the
    system's). The object id is recomputed over the bytes written and must be ``oid``.
    """
    write_out: Callable[[bytes], Any] = _write_all(out) if isinstance(out, int) else out.write
    files = _Files()
    spools: list[IO[bytes]] = []
    try:
        chain = _chain(store, oid, files)
        full = chain[-1]
        _check_blob(full, oid)
        size = _result_size(files, chain[0], oid)
        if size > limit:
            raise HistoryError(f"blob {oid.decode(errors='replace')} is {size} bytes, over "
                               f"the {limit}-byte limit", reason=Reason.FileTooLarge)
        digest = hashlib.sha1(b"blob %d\0" % size)

        def final(data: bytes) -> None:
            digest.update(data)
            write_out(data)

        if len(chain) == 1:
            written = _inflate_to(files, full, oid, final)
        else:
            # The full object at the bottom, then each delta above it but the last.
            base_size = full.size
            tmp, write, done = spool(scratch, base_size)
            if not isinstance(tmp, bytes):
                spools.append(tmp)
            _inflate_to(files, full, oid, write)
            base = done()
            for entry in reversed(chain[1:-1]):
                result = _result_size(files, entry, oid)
                tmp, write, done = spool(scratch, result)
                if not isinstance(tmp, bytes):
                    spools.append(tmp)
                _apply_delta(_open(files, entry, oid), base, base_size, write, oid)
                if not isinstance(base, bytes):
                    base.close()
                base, base_size = done(), result
            written = _apply_delta(_open(files, chain[0], oid), base, base_size, final, oid)
        if written != size or digest.hexdigest().encode() != oid:
            raise _corrupt(oid, "what the store holds under this id has another id")
        return written
    finally:
        for fh in spools:
            fh.close()
        files.close()


def _write_all(fd: int) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    return write


def _inflate_to(files: _Files, entry: _Entry, oid: bytes,
                write: Callable[[bytes], Any]) -> int:
    """Inflate a full (undeltified) object's content into ``write``, slice by slice."""
    _copy_out(_open(files, entry, oid), entry.size, write, oid)
    return entry.size


def _copy_out(src: _Inflater, size: int, write: Callable[[bytes], Any], oid: bytes) -> None:
    """All ``size`` bytes of ``src`` into ``write``; the stream must end there."""
    left = size
    while left:
        data = src.read(min(CHUNK, left))
        if not data:
            raise _corrupt(oid, "inflates to less than its declared size")
        write(data)
        left -= len(data)
    src.finish()
