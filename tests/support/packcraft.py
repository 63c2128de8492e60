"""Packs and bundles built byte by byte, for shapes no honest git would write.

Used by the amplification tests, the fuzz targets and ``bench/delta_memory_bench.py``:
whole objects, offset deltas with hand-written instructions, and the "stacked" shape
(a chain of large delta results where every level also has a pending sibling), plus a
commit and tree that reach every blob so the import gate walks them all.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

COMMIT, TREE, BLOB, OFS_DELTA = 1, 2, 3, 6
IDENT = b"Fuzz <fuzz@example.invalid> 1700000000 +0000"


def varint(n: int) -> bytes:
    """A delta header size: 7 bits a byte, least significant first."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def copy_op(offset: int, size: int) -> bytes:
    """Copy ``size`` bytes (at most 0xFFFFFF) from ``offset`` of the base."""
    assert 0 < size <= 0xFFFFFF
    cmd, args = 0x80, bytearray()
    for i in range(4):
        byte = (offset >> (8 * i)) & 0xFF
        if byte:
            cmd |= 1 << i
            args.append(byte)
    for i in range(3):
        byte = (size >> (8 * i)) & 0xFF
        if byte:
            cmd |= 1 << (4 + i)
            args.append(byte)
    return bytes([cmd]) + bytes(args)


def copy_all(size: int) -> bytes:
    """Instructions that copy the first ``size`` bytes of the base, in 8 MiB pieces."""
    ops, done = bytearray(), 0
    while done < size:
        step = min(size - done, 8 << 20)
        ops += copy_op(done, step)
        done += step
    return bytes(ops)


def object_header(type_num: int, size: int) -> bytes:
    byte = (type_num << 4) | (size & 0x0F)
    size >>= 4
    out = bytearray()
    while size:
        out.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    out.append(byte)
    return bytes(out)


def ofs_distance(distance: int) -> bytes:
    """git's offset encoding of a delta's distance back to its base."""
    out = [distance & 0x7F]
    distance >>= 7
    while distance:
        distance -= 1
        out.append(0x80 | (distance & 0x7F))
        distance >>= 7
    return bytes(reversed(out))


def oid(type_name: bytes, data: bytes) -> bytes:
    return hashlib.sha1(type_name + b" %d\0" % len(data) + data).digest()


class PackWriter:
    """Append whole objects and offset deltas; ``finish()`` gives the pack bytes."""

    def __init__(self) -> None:
        self.body = bytearray()
        self.count = 0

    def whole(self, type_num: int, data: bytes) -> int:
        offset = 12 + len(self.body)
        self.body += object_header(type_num, len(data)) + zlib.compress(data, 1)
        self.count += 1
        return offset

    def delta(self, base_offset: int, instructions: bytes) -> int:
        offset = 12 + len(self.body)
        self.body += (object_header(OFS_DELTA, len(instructions))
                      + ofs_distance(offset - base_offset) + zlib.compress(instructions))
        self.count += 1
        return offset

    def finish(self) -> bytes:
        pack = b"PACK" + (2).to_bytes(4, "big") + self.count.to_bytes(4, "big") + self.body
        return pack + hashlib.sha1(pack).digest()


def tree_of(entries: dict[bytes, bytes]) -> bytes:
    """A tree of regular files, name -> binary blob id, in git's order."""
    return b"".join(b"100644 " + name + b"\0" + sha for name, sha in sorted(entries.items()))


def commit_of(tree: bytes, message: bytes = b"crafted\n") -> bytes:
    return (b"tree " + tree.hex().encode() + b"\nauthor " + IDENT + b"\ncommitter " + IDENT
            + b"\n\n" + message)


@dataclass
class Crafted:
    bundle: bytes
    commit: str
    objects: int


def bundle_of(pack: PackWriter, tips: dict[bytes, bytes]) -> bytes:
    header = b"# v2 git bundle\n" + b"".join(
        sha.hex().encode() + b" " + ref + b"\n" for ref, sha in tips.items()) + b"\n"
    return header + pack.finish()


def stacked(size: int, levels: int) -> Crafted:
    """A chain of ``levels`` delta results of ``size`` bytes, each level with a sibling.

    The sibling of every level comes first in the pack, so a depth-first resolver that
    keeps bases on its work list holds one ``size``-byte base per level at the bottom.
    """
    pack = PackWriter()
    base = b"\0" * size
    base_offset = pack.whole(BLOB, base)
    names = {b"c00": oid(b"blob", base)}
    tail = size - 16
    for level in range(1, levels + 1):
        for kind in (b"l", b"c"):  # leaf first, continuation last (popped first)
            stamp = b"%s%015d" % (kind, level)
            result = base[:tail] + stamp
            names[b"%s%02d" % (kind, level)] = oid(b"blob", result)
            offset = pack.delta(base_offset, varint(size) + varint(size) + copy_all(tail)
                                + bytes([16]) + stamp)
            if kind == b"c":
                base, base_offset = result, offset
    tree = tree_of(names)
    tree_id = oid(b"tree", tree)
    pack.whole(TREE, tree)
    commit = commit_of(tree_id)
    pack.whole(COMMIT, commit)
    commit_id = oid(b"commit", commit)
    return Crafted(bundle_of(pack, {b"refs/heads/main": commit_id}), commit_id.hex(),
                   pack.count)


def chain(size: int, depth: int) -> Crafted:
    """A straight chain of ``depth`` deltas, each rebuilding a ``size``-byte result."""
    pack = PackWriter()
    base = b"\0" * size
    base_offset = pack.whole(BLOB, base)
    names = {b"d00000": oid(b"blob", base)}
    tail = size - 16
    for level in range(1, depth + 1):
        stamp = b"d%015d" % level
        base = base[:tail] + stamp
        names[b"d%05d" % level] = oid(b"blob", base)
        base_offset = pack.delta(base_offset, varint(size) + varint(size) + copy_all(tail)
                                 + bytes([16]) + stamp)
    tree = tree_of(names)
    pack.whole(TREE, tree)
    commit = commit_of(oid(b"tree", tree))
    pack.whole(COMMIT, commit)
    commit_id = oid(b"commit", commit)
    return Crafted(bundle_of(pack, {b"refs/heads/main": commit_id}), commit_id.hex(),
                   pack.count)
