"""Deltas for artifacts in outgoing bundles: a changed artifact travels as what changed.

dulwich writes a pack's new objects whole unless a delta already sits in a pack it can
reuse, and its own delta search (difflib) takes seconds per megabyte. git's bundles are
small because ``pack-objects --thin`` deltifies each new blob against the version the
receiver holds. This does the same for the files under ``artifacts/``: for each one that
changed between an excluded commit (a prerequisite, which the receiver holds) and a
tip, the new blob is written as a ``REF_DELTA`` against the old one (a thin pack, as
git's are; the importer resolves it through the receiver's store).

The delta is found by comparing the two versions at the same offsets, in blocks that are
split (64 KiB, 4 KiB, 256 B, 16 B) where they differ: what a rebuilt firmware image, an
edited archive member or a patched binary looks like (bytes changed in place). Content
shifted by an insertion is not matched past the shift; the delta is then kept only if it
is smaller than the blob, else the blob goes whole. Linear in the artifact's size, and
in C for the comparisons.

``pairs(store, tips, excluded)`` finds (new blob, old blob) for changed artifacts;
``deltify(store, records, pairs)`` rewrites a pack's record stream. Called by
``History.write_bundle`` when the publisher asks for it (``giter-bundle create``).
"""

from __future__ import annotations

import stat
from collections.abc import Iterable, Iterator
from typing import Any

from dulwich.pack import UnpackedObject

from giter_agent.core.layout import ARTIFACTS_DIR
from giter_agent.history.objects import oid, read_commit, read_tree

MIN_BYTES = 1 << 16  # smaller artifacts go whole: the delta's bookkeeping is not worth it
_BLOCKS = (1 << 16, 1 << 12, 1 << 8, 1 << 4)
_MAX_COPY = 0xFFFFFF  # a copy op's size field is three bytes
_MAX_INSERT = 0x7F
_REF_DELTA = 7


def _artifacts(store: Any, commit: bytes) -> dict[bytes, bytes]:
    """path -> blob id of every regular file under ``artifacts/`` of ``commit``."""
    out: dict[bytes, bytes] = {}
    tree = read_tree(store, read_commit(store, commit).tree)
    try:
        mode, sha = tree[ARTIFACTS_DIR.encode()]
    except KeyError:
        return out
    if not stat.S_ISDIR(mode):
        return out
    todo = [(ARTIFACTS_DIR.encode(), sha)]
    while todo:
        path, sha = todo.pop()
        for name, mode, entry in read_tree(store, sha).iteritems():
            if stat.S_ISDIR(mode):
                todo.append((path + b"/" + name, entry))
            elif stat.S_ISREG(mode):
                out[path + b"/" + name] = entry
    return out


def pairs(store: Any, tips: Iterable[bytes], excluded: Iterable[bytes]) -> dict[bytes, bytes]:
    """new blob id -> the blob at the same path in an excluded commit, for every artifact
    that differs between them (the receiver holds the excluded commits' objects)."""
    held: dict[bytes, bytes] = {}
    for commit in excluded:
        held.update(_artifacts(store, commit))
    found: dict[bytes, bytes] = {}
    for tip in tips:
        for path, new in _artifacts(store, tip).items():
            old = held.get(path)
            if old is not None and old != new:
                found.setdefault(new, old)
    return found


def _size(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class _Ops:
    """git delta instructions, merging adjacent copies and inserts."""

    def __init__(self, base_len: int, new_len: int) -> None:
        self.out = bytearray(_size(base_len) + _size(new_len))
        self._copy: tuple[int, int] | None = None
        self._insert = bytearray()

    def copy(self, start: int, length: int) -> None:
        self._flush_insert()
        if self._copy is not None and sum(self._copy) == start:
            self._copy = (self._copy[0], self._copy[1] + length)
        else:
            self._flush_copy()
            self._copy = (start, length)

    def insert(self, data: bytes | memoryview) -> None:
        self._flush_copy()
        self._insert += data

    def _flush_copy(self) -> None:
        if self._copy is None:
            return
        start, length = self._copy
        self._copy = None
        while length:
            n = min(length, _MAX_COPY)
            op, args = 0x80, bytearray()
            for i in range(4):
                byte = (start >> (8 * i)) & 0xFF
                if byte:
                    op |= 1 << i
                    args.append(byte)
            for i in range(3):
                byte = (n >> (8 * i)) & 0xFF
                if byte:
                    op |= 1 << (4 + i)
                    args.append(byte)
            self.out.append(op)
            self.out += args
            start += n
            length -= n

    def _flush_insert(self) -> None:
        data = self._insert
        for i in range(0, len(data), _MAX_INSERT):
            piece = data[i:i + _MAX_INSERT]
            self.out.append(len(piece))
            self.out += piece
        self._insert = bytearray()

    def finish(self) -> bytes:
        self._flush_copy()
        self._flush_insert()
        return bytes(self.out)


def make_delta(base: bytes, new: bytes) -> bytes:
    """A git delta that builds ``new`` from ``base`` (same-offset block matching)."""
    ops = _Ops(len(base), len(new))
    old_view, new_view = memoryview(base), memoryview(new)
    common = min(len(base), len(new))

    def refine(start: int, length: int, level: int) -> None:
        if old_view[start:start + length] == new_view[start:start + length]:
            ops.copy(start, length)
        elif level == len(_BLOCKS):
            ops.insert(new_view[start:start + length])
        else:
            step = _BLOCKS[level]
            for at in range(start, start + length, step):
                refine(at, min(step, start + length - at), level + 1)

    for at in range(0, common, _BLOCKS[0]):
        refine(at, min(_BLOCKS[0], common - at), 1)
    if len(new) > common:
        ops.insert(new_view[common:])
    return ops.finish()


def deltify(store: Any, records: Iterable[UnpackedObject], found: dict[bytes, bytes]
            ) -> Iterator[UnpackedObject]:
    """``records`` with each blob of ``found`` replaced by a delta against its old
    version when that is smaller (a thin pack's ref-delta); the rest unchanged."""
    for record in records:
        base = None
        if record.delta_base is None and found:
            new = record.sha().hex().encode()
            base = found.get(new)
        if base is None:
            yield record
            continue
        data = store[oid(new)].as_raw_string()
        if len(data) < MIN_BYTES:
            yield record
            continue
        delta = make_delta(store[oid(base)].as_raw_string(), data)
        if len(delta) >= len(data):
            yield record
            continue
        del data
        yield UnpackedObject(_REF_DELTA, sha=record.sha(),
                             delta_base=bytes.fromhex(base.decode()),
                             decomp_len=len(delta), decomp_chunks=[delta])
