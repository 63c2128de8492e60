"""The git bundle file format (v2 and v3), read strictly and written atomically.

``read_header`` parses the text header of a bundle from an open file without touching
the pack behind it. ``PackScanner`` and ``GatedPackReader`` check the pack stream as
it flows from the file into the object store: object count, the declared size of every
object (before anything inflates it), delta result sizes, truncation, junk at the end
and the trailing SHA-1. ``write_bundle`` writes a header plus a pack produced by a
callback, through a temp file that is fsynced and renamed into place.

Called by ``history.store`` (import and export) and by the publisher's tools that
inspect bundles. Nothing here touches an object store.
"""

from __future__ import annotations

import os
import re
import stat
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from giter_agent.core.durable import atomic_writer, shown
from giter_agent.core.errors import BundleError, UnreadableBundle
from giter_agent.core.named_tuple import NamedTuple

SIGNATURES = {b"# v2 git bundle\n": 2, b"# v3 git bundle\n": 3}

# A refname or a prerequisite's subject line fits easily; anything longer is hostile.
MAX_LINE_BYTES = 8192
# Thousands of refs fit; a header that is megabytes long is not a fleet bundle.
MAX_HEADER_BYTES = 1 << 20

_HEX_ID = re.compile(rb"[0-9a-f]{40}")
_CAPABILITY_KEY = rb"[A-Za-z0-9-]+"  # compiled when first used (re's cache)

# Pack object type numbers (gitformat-pack).
_COMMIT, _TREE, _BLOB, _TAG, _OFS_DELTA, _REF_DELTA = 1, 2, 3, 4, 6, 7
_PACK_TYPES = {_COMMIT, _TREE, _BLOB, _TAG, _OFS_DELTA, _REF_DELTA}
_SHA1_BYTES = 20
# Variable-length integers in a pack never need more than 10 bytes for 64 bits.
_MAX_VARINT_BYTES = 10
# Inflate in slices of this size so a single object never becomes one big buffer.
_INFLATE_SLICE = 64 * 1024


class BundleHeader(NamedTuple):
    """What a bundle's header says: its format, what it needs, and what it offers
    (built by ``read_header``)."""

    version: int
    capabilities: dict[bytes, bytes | None]
    prerequisites: list[bytes]  # hex commit ids the reader must already have
    refs: dict[bytes, bytes]  # refname -> hex object id
    pack_offset: int  # where the pack starts in the file
    prerequisite_comments: dict[bytes, bytes]  # hex commit id -> its comment


def _malformed(lineno: int, what: str) -> BundleError:
    return BundleError(f"bundle header line {lineno}: {what}", reason="MalformedBundle")


def show_name(name: bytes) -> str:
    """A refname or other header bytes for a message: never raises, whatever the bytes."""
    return name[:200].decode("utf-8", "backslashreplace")


# Names of plain components (no dot at all) pass every rule of git-check-ref-format at
# once; any other name is judged by dulwich's ``check_ref_format`` (loaded only then).
_PLAIN_REFNAME = re.compile(rb"refs(?:/[A-Za-z0-9_-]+)+")


def _check_refname(name: bytes) -> bool:
    if name == b"HEAD" or _PLAIN_REFNAME.fullmatch(name):
        return True
    from dulwich.refs import Ref, check_ref_format

    return name.startswith(b"refs/") and check_ref_format(Ref(name))


def read_header(fh: BinaryIO, *, max_header_bytes: int = MAX_HEADER_BYTES) -> BundleHeader:
    """Parse a bundle header from ``fh``, leaving it positioned at the first pack byte.

    Reads line by line and never past the blank line that ends the header, so the
    pack itself is never pulled into memory here.
    """
    consumed = 0
    lineno = 0

    def next_line() -> bytes:
        nonlocal consumed, lineno
        line = fh.readline(MAX_LINE_BYTES + 1)
        lineno += 1
        consumed += len(line)
        if consumed > max_header_bytes:
            raise BundleError(
                f"bundle header is longer than {max_header_bytes} bytes", reason="TooLarge"
            )
        if not line.endswith(b"\n"):
            if len(line) > MAX_LINE_BYTES:
                raise _malformed(lineno, f"line longer than {MAX_LINE_BYTES} bytes")
            raise BundleError(
                f"bundle ends inside its header (line {lineno})", reason="TruncatedBundle"
            )
        return line[:-1]

    first = fh.readline(32)
    consumed += len(first)
    lineno = 1
    version = SIGNATURES.get(first)
    if version is None:
        if first.startswith(b"# v") and first.endswith(b" git bundle\n"):
            raise BundleError(
                f"unsupported bundle format {first.strip().decode(errors='replace')!r}"
                " (only v2 and v3 are read)",
                reason="UnsupportedBundle",
            )
        raise BundleError("not a git bundle (no '# v2/v3 git bundle' line)",
                          reason="NotABundle")

    capabilities: dict[bytes, bytes | None] = {}
    prerequisites: list[bytes] = []
    comments: dict[bytes, bytes] = {}
    refs: dict[bytes, bytes] = {}
    # The grammar fixes the order: capabilities, then prerequisites, then references.
    section = 0
    while True:
        line = next_line()
        if not line:
            break
        if line.startswith(b"@"):
            if version == 2:
                raise _malformed(lineno, "capabilities ('@') only exist in v3 bundles")
            if section > 0:
                raise _malformed(lineno, "capability after prerequisites or references")
            key, sep, value = line[1:].partition(b"=")
            if not re.fullmatch(_CAPABILITY_KEY, key):
                raise _malformed(lineno, f"bad capability name {key!r}")
            if key in capabilities:
                raise _malformed(lineno, f"capability {show_name(key)} given twice")
            capabilities[key] = value if sep else None
            _check_capability(key, value if sep else None)
        elif line.startswith(b"-"):
            if section > 1:
                raise _malformed(lineno, "prerequisite after references")
            section = 1
            oid, sep, comment = line[1:].partition(b" ")
            if not _HEX_ID.fullmatch(oid):
                raise _malformed(lineno, f"prerequisite {oid[:64]!r} is not a 40-hex object id")
            if oid not in comments:
                prerequisites.append(oid)
            comments[oid] = comment
        else:
            section = 2
            oid, sep, name = line.partition(b" ")
            if not _HEX_ID.fullmatch(oid):
                raise _malformed(lineno, f"reference {oid[:64]!r} is not a 40-hex object id")
            if not sep or not name:
                raise _malformed(lineno, f"reference {oid.decode()} has no refname")
            if not _check_refname(name):
                raise _malformed(lineno, f"invalid refname {name[:200]!r}")
            if name in refs:
                raise _malformed(lineno, f"refname {show_name(name)} listed twice")
            refs[name] = oid

    if not refs:
        raise BundleError("bundle header lists no references", reason="MalformedBundle")
    if version == 3 and b"object-format" not in capabilities:
        # Git omits it only for sha1; say so explicitly to keep later checks simple.
        capabilities[b"object-format"] = b"sha1"
    return BundleHeader(
        version=version,
        capabilities=capabilities,
        prerequisites=prerequisites,
        refs=refs,
        pack_offset=consumed,
        prerequisite_comments=comments,
    )


def open_file(bundle_path: Path, max_bytes: int) -> tuple[BinaryIO, int]:
    """The bundle file open for reading, and its size (at most ``max_bytes``: else
    ``BundleError(TooLarge)``). Only a regular file is read, and opening never blocks on
    a FIFO or a device; what cannot be opened is ``UnreadableBundle``."""
    shown_path = shown(str(bundle_path))
    try:
        fd = os.open(bundle_path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise UnreadableBundle(f"cannot read bundle {shown_path}: not a regular file")
        os.set_blocking(fd, True)
        fh = open(fd, "rb")  # noqa: SIM115 - the caller closes it
        size = st.st_size
    except OSError as exc:
        raise UnreadableBundle(
            f"cannot read bundle {shown_path}: {exc.strerror or exc}") from exc
    if size > max_bytes:
        fh.close()
        raise BundleError(f"bundle is {size} bytes, over max_bundle_bytes={max_bytes}",
                          reason="TooLarge")
    return fh, size


def header_of(fh: BinaryIO, bundle_path: Path) -> BundleHeader:
    """``read_header`` of an open bundle file; a read that fails (a stick pulled
    mid-read, never a local disk's fault) is ``UnreadableBundle``."""
    try:
        return read_header(fh)
    except OSError as exc:
        raise UnreadableBundle(
            f"cannot read bundle {bundle_path}: {exc.strerror or exc}") from exc


def announced_refs(bundle_path: Path, max_bytes: int) -> dict[bytes, bytes]:
    """The refs ``bundle_path``'s header names, read as an import reads them, with
    nothing else read and nothing written. Nothing in them is verified."""
    fh, _ = open_file(bundle_path, max_bytes)
    with fh:
        return dict(header_of(fh, bundle_path).refs)


def _check_capability(key: bytes, value: bytes | None) -> None:
    if key == b"object-format":
        if value == b"sha1":
            return
        raise BundleError(
            f"bundle uses object-format={(value or b'').decode(errors='replace')};"
            " only sha1 is supported",
            reason="UnsupportedBundle",
        )
    if key == b"filter":
        raise BundleError(
            "bundle is partial (@filter): partial bundles are not supported",
            reason="UnsupportedBundle",
        )
    # Git aborts on capabilities it does not know, and so do we.
    raise BundleError(f"unknown bundle capability {key.decode()!r}", reason="UnsupportedBundle")


def format_header(refs: Mapping[bytes, bytes], prerequisites: Sequence[tuple[bytes, bytes]] = (),
                  version: int = 2) -> bytes:
    """Render a bundle header; ``prerequisites`` are (hex id, comment) pairs."""
    if version not in (2, 3):
        raise ValueError(f"bundle version must be 2 or 3, not {version}")
    if not refs:
        raise ValueError("a bundle needs at least one reference")
    lines = [b"# v3 git bundle" if version == 3 else b"# v2 git bundle"]
    if version == 3:
        lines.append(b"@object-format=sha1")
    for oid, comment in prerequisites:
        if not _HEX_ID.fullmatch(oid):
            raise ValueError(f"prerequisite {oid!r} is not a 40-hex object id")
        if b"\n" in comment:
            raise ValueError("a prerequisite comment must be one line")
        lines.append(b"-" + oid + (b" " + comment if comment else b""))
    for name, oid in refs.items():
        if not _check_refname(name):
            raise ValueError(f"invalid refname {name!r}")
        if not _HEX_ID.fullmatch(oid):
            raise ValueError(f"ref {name!r} target {oid!r} is not a 40-hex object id")
        lines.append(oid + b" " + name)
    return b"\n".join(lines) + b"\n\n"


def write_bundle(path: Path, *, refs: Mapping[bytes, bytes],
                 prerequisites: Sequence[tuple[bytes, bytes]] = (),
                 pack_writer: Callable[[BinaryIO], None], version: int = 2,
                 dir_fd: int | None = None) -> None:
    """Write header then ``pack_writer(fh)``'s pack to ``path``: temp, fsync, rename.

    A crash or an exception from ``pack_writer`` leaves any previous file at ``path``
    untouched and no temp file behind. With ``dir_fd``, ``path`` is a name in that
    open folder (``giter_agent.core.durable.atomic_writer``).
    """
    header = format_header(refs, prerequisites, version)
    with atomic_writer(Path(path), dir_fd=dir_fd) as fh:
        fh.write(header)
        pack_writer(fh)


def _corrupt(what: str) -> BundleError:
    return BundleError(f"corrupt pack in bundle: {what}", reason="CorruptBundle")


class PackScanner:
    """Check a pack stream fed in arbitrary slices, keeping only a few bytes of state.

    It inflates each object into nothing (counting bytes, never keeping them) only to
    find where the object ends: a pack does not record compressed lengths.
    Every limit is enforced as soon as the bytes that carry it arrive: the object
    count from the pack header, each object's size from its own header (before any of
    its data is inflated), and a delta's result size from the first bytes of the delta.
    """

    def __init__(self, *, max_objects: int, max_object_bytes: int) -> None:
        self.max_objects = max_objects
        self.max_object_bytes = max_object_bytes
        self.offset = 0  # bytes of the pack consumed so far
        self.object_count: int | None = None
        import hashlib  # a pack scanned: a stick already taken is answered from its header

        self._sha = hashlib.sha1()
        self._state = "header"
        self._field = bytearray()  # a fixed-size field or varint being collected
        self._left = 0  # objects still to come
        self._obj_start = 0
        self._obj_type = 0
        self._obj_size = 0
        self._inflater: zlib._Decompress | None = None
        self._inflated = 0
        self._delta_head: bytearray | None = None

    @property
    def done(self) -> bool:
        return self._state == "done"

    def feed(self, data: bytes) -> None:
        """Consume the next bytes of the pack; raise BundleError on the first problem."""
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            state = self._state
            if state == "done":
                raise _corrupt(f"{len(view) - pos} bytes of junk after the pack checksum")
            used = getattr(self, "_on_" + state)(view[pos:])
            if state != "trailer":
                self._sha.update(view[pos:pos + used])
            self.offset += used
            pos += used

    def finish(self) -> None:
        """Declare the end of input; raise TruncatedBundle unless the pack was complete."""
        if self._state == "done":
            return
        where = {
            "header": "the pack header",
            "trailer": "the pack checksum",
        }.get(self._state, f"object {self._object_index()} of {self.object_count}")
        raise BundleError(
            f"bundle is truncated: the pack ends after {self.offset} bytes, inside {where}",
            reason="TruncatedBundle",
        )

    def _object_index(self) -> int:
        return (self.object_count or 0) - self._left + 1

    def _take(self, data: memoryview, size: int) -> tuple[int, bool]:
        """Collect up to ``size`` bytes into the field; say how many were used and if full."""
        want = size - len(self._field)
        chunk = data[:want]
        self._field += chunk
        return len(chunk), len(self._field) == size

    def _on_header(self, data: memoryview) -> int:
        used, full = self._take(data, 12)
        if full:
            raw = bytes(self._field)
            self._field.clear()
            if raw[:4] != b"PACK":
                raise _corrupt("the data after the header is not a pack")
            version = int.from_bytes(raw[4:8], "big")
            if version not in (2, 3):
                raise _corrupt(f"pack version {version} is not 2 or 3")
            count = int.from_bytes(raw[8:12], "big")
            if count > self.max_objects:
                raise BundleError(
                    f"bundle holds {count} objects, over max_objects={self.max_objects}",
                    reason="TooLarge",
                )
            self.object_count = self._left = count
            self._next_object()
        return used

    def _next_object(self) -> None:
        self._state = "object" if self._left else "trailer"

    def _on_object(self, data: memoryview) -> int:
        if not self._field:
            self._obj_start = self.offset
        byte = data[0]
        self._field.append(byte)
        if byte & 0x80:
            if len(self._field) >= _MAX_VARINT_BYTES:
                raise _corrupt(f"object header at offset {self._obj_start} is too long")
            return 1
        raw = self._field
        obj_type = (raw[0] >> 4) & 0x07
        size = raw[0] & 0x0F
        for i, b in enumerate(raw[1:]):
            size |= (b & 0x7F) << (4 + 7 * i)
        self._field = bytearray()
        if obj_type not in _PACK_TYPES:
            raise _corrupt(f"object at offset {self._obj_start} has invalid type {obj_type}")
        if size > self.max_object_bytes:
            kind = "delta" if obj_type in (_OFS_DELTA, _REF_DELTA) else "object"
            raise BundleError(
                f"{kind} at pack offset {self._obj_start} is {size} bytes,"
                f" over max_object_bytes={self.max_object_bytes}",
                reason="TooLarge",
            )
        self._obj_type, self._obj_size = obj_type, size
        self._state = {_OFS_DELTA: "ofs", _REF_DELTA: "ref"}.get(obj_type, "zlib")
        if self._state == "zlib":
            self._start_inflate()
        return 1

    def _on_ofs(self, data: memoryview) -> int:
        byte = data[0]
        self._field.append(byte)
        if byte & 0x80:
            if len(self._field) >= _MAX_VARINT_BYTES:
                raise _corrupt(f"delta offset at {self._obj_start} is too long")
            return 1
        # Git's offset encoding adds one at each continuation so no value has two forms.
        distance = self._field[0] & 0x7F
        for b in self._field[1:]:
            distance = ((distance + 1) << 7) | (b & 0x7F)
        self._field = bytearray()
        if distance == 0 or distance > self._obj_start - 12:
            raise _corrupt(f"delta at offset {self._obj_start} points outside the pack")
        self._state = "zlib"
        self._start_inflate()
        return 1

    def _on_ref(self, data: memoryview) -> int:
        used, full = self._take(data, _SHA1_BYTES)
        if full:
            self._field.clear()
            self._state = "zlib"
            self._start_inflate()
        return used

    def _start_inflate(self) -> None:
        self._inflater = zlib.decompressobj()
        self._inflated = 0
        is_delta = self._obj_type in (_OFS_DELTA, _REF_DELTA)
        self._delta_head = bytearray() if is_delta else None

    def _on_zlib(self, data: memoryview) -> int:
        inflater = self._inflater
        assert inflater is not None
        pending: bytes | memoryview = data
        try:
            while True:
                # Never inflate more than one byte past the declared size: a zlib bomb
                # behind a small declared size stops here.
                room = min(_INFLATE_SLICE, self._obj_size - self._inflated + 1)
                out = inflater.decompress(pending, room)
                self._inflated += len(out)
                if self._inflated > self._obj_size:
                    raise _corrupt(
                        f"object at offset {self._obj_start} inflates past its declared"
                        f" {self._obj_size} bytes"
                    )
                if self._delta_head is not None and out:
                    self._read_delta_head(out)
                pending = inflater.unconsumed_tail
                if inflater.eof or not pending:
                    break
        except zlib.error as exc:
            raise _corrupt(f"object at offset {self._obj_start} does not inflate: {exc}") from None
        if not inflater.eof:
            return len(data)
        used = len(data) - len(inflater.unused_data)
        if self._inflated != self._obj_size:
            raise _corrupt(
                f"object at offset {self._obj_start} inflates to {self._inflated} bytes,"
                f" its header says {self._obj_size}"
            )
        if self._delta_head is not None:
            raise _corrupt(f"delta at offset {self._obj_start} is too short")
        self._inflater = None
        self._left -= 1
        self._next_object()
        return used

    def _read_delta_head(self, out: bytes) -> None:
        """Read a delta's base and result sizes and refuse an oversized result."""
        head = self._delta_head
        assert head is not None
        head += out[: 2 * _MAX_VARINT_BYTES - len(head)]
        sizes: list[int] = []
        pos = 0
        for _ in range(2):
            value = shift = 0
            while True:
                if pos >= len(head):
                    if len(head) >= 2 * _MAX_VARINT_BYTES:
                        raise _corrupt(f"delta at offset {self._obj_start} has a bad header")
                    return  # wait for more inflated bytes
                b = head[pos]
                pos += 1
                value |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            sizes.append(value)
        result = sizes[1]
        if result > self.max_object_bytes:
            raise BundleError(
                f"delta at pack offset {self._obj_start} builds an object of {result} bytes,"
                f" over max_object_bytes={self.max_object_bytes}",
                reason="TooLarge",
            )
        self._delta_head = None

    def _on_trailer(self, data: memoryview) -> int:
        used, full = self._take(data, _SHA1_BYTES)
        if full:
            if bytes(self._field) != self._sha.digest():
                raise _corrupt(
                    f"pack checksum mismatch (file says {bytes(self._field).hex()},"
                    f" content hashes to {self._sha.hexdigest()})"
                )
            self._field.clear()
            self._state = "done"
        return used


class GatedPackReader:
    """Read a pack from a file for a consumer, releasing no byte the scanner has not seen.

    ``read_all``/``read_some`` have the shape dulwich's ``add_thin_pack`` expects. Each
    slice read from the file is fed to the ``PackScanner`` before any of it is handed
    out, so an object's header is always checked before the consumer can inflate the
    object, and a truncated or junk-tailed file fails before the consumer sees its end.
    """

    def __init__(self, fh: BinaryIO, length: int, scanner: PackScanner, *,
                 chunk_size: int = 64 * 1024, check: Callable[[], None] | None = None) -> None:
        self._fh = fh
        self._remaining = length
        self._scanner = scanner
        self._chunk_size = chunk_size
        self._check = check
        self._buf = bytearray()
        self._pos = 0

    def _fill(self) -> None:
        if self._check is not None:
            self._check()
        if self._remaining <= 0:
            self._scanner.finish()
            raise _corrupt("the pack reader wants more bytes than the pack holds")
        try:
            data = self._fh.read(min(self._chunk_size, self._remaining))
        except OSError as exc:  # a USB stick pulled mid-read, a bad sector
            raise UnreadableBundle(
                f"cannot read the bundle's pack: {exc.strerror or exc}") from exc
        if not data:
            # The file shrank under us after its size was taken.
            self._remaining = 0
            self._scanner.finish()
            raise _corrupt("the bundle file shrank while it was read")
        self._remaining -= len(data)
        self._scanner.feed(data)
        if self._remaining == 0:
            self._scanner.finish()
        # Drop what was handed out, then append: linear however large a read_all is
        # (re-joining the whole buffer per slice made a 32 MiB read cost 8 GB of copies).
        if self._pos:
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += data

    def read_all(self, size: int) -> bytes:
        while len(self._buf) - self._pos < size:
            self._fill()
        out = bytes(self._buf[self._pos:self._pos + size])
        self._pos += size
        return out

    def read_some(self, size: int) -> bytes:
        if self._pos >= len(self._buf):
            self._fill()
        out = bytes(self._buf[self._pos:self._pos + size])
        self._pos += len(out)
        return out

    def drain(self) -> None:
        """Feed the rest of the file to the scanner (the consumer may stop at the trailer)."""
        self._pos = len(self._buf)
        while self._remaining > 0:
            self._fill()
            self._pos = len(self._buf)
        self._scanner.finish()
