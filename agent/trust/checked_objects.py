"""Object reads the trust rules rely on: stored bytes checked against their id.

The spec-commit rule (``trust.spec_rule``), the trust files (``trust.trust_files``) and
the status-commit ownership check (``trust.status_rule``) never take the store's word
for an object: each read is hashed against its id and its type is checked.
``CheckedReader`` also keeps the commits a walk has read (up to a byte budget) for the
verification that follows, so a commit is read, inflated and hashed once per update.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

from giter_agent.core.errors import TrustError

COMMIT, TREE, BLOB = 1, 2, 3
TYPE_NAMES = {COMMIT: b"commit", TREE: b"tree", BLOB: b"blob"}
DIR_MODE = 0o040000
FILE_MODES = (0o100644, 0o100755)

# What a reader keeps of the commits a walk read: about 16,000 signed commits. Beyond it
# a commit is read again when it is verified (correct, only slower).
KEEP_BYTES = 16 * 2**20


def refuse(reason: str, message: str, commit: bytes | None = None) -> TrustError:
    """The TrustError of a refusal, naming ``commit`` when there is one."""
    return TrustError(message, reason=reason, commit=commit.decode() if commit else None)


def read(store: Any, oid: bytes, type_num: int) -> bytes:
    """An object's stored bytes, checked against its id: we never trust the store's word."""
    return _checked(oid, type_num, _get_raw(store.get_raw, oid, type_num))


def _get_raw(get_raw: Callable[[bytes], tuple[int, bytes]], oid: bytes,
             type_num: int) -> tuple[int, bytes]:
    try:
        return get_raw(oid)
    except KeyError:
        raise refuse("MissingObject", f"object {oid.decode()} is not in the repository",
                     oid if type_num == COMMIT else None) from None


def _checked(oid: bytes, type_num: int, found: tuple[int, bytes]) -> bytes:
    actual_type, data = found
    if actual_type != type_num:
        raise refuse("CorruptObject", f"object {oid.decode()} is not a "
                     f"{TYPE_NAMES[type_num].decode()}", oid)
    header = TYPE_NAMES[type_num] + b" %d\0" % len(data)
    if hashlib.sha1(header + data).hexdigest().encode() != oid:
        raise refuse("CorruptObject", f"object {oid.decode()} does not hash to its id", oid)
    return data


def tree_entries(raw: bytes) -> Iterator[tuple[bytes, int, bytes]]:
    """(name, mode, hex id) for each entry of a tree object's stored bytes."""
    pos = 0
    while pos < len(raw):
        space = raw.index(b" ", pos)
        nul = raw.index(b"\0", space)
        if nul + 21 > len(raw):
            raise ValueError("truncated tree entry")
        yield raw[space + 1:nul], int(raw[pos:space], 8), raw[nul + 1:nul + 21].hex().encode()
        pos = nul + 21


def _fast(pack: Any) -> Any:
    """``pack`` read through ``history.pack_read`` when dulwich maps it, else as it is."""
    from giter_agent.history.pack_read import PackReader

    try:
        return PackReader(pack)
    except AttributeError:  # a dulwich that keeps no mapping: its own reader
        return pack


class CheckedReader:
    """Checked reads of one store for one update, keeping what a walk read of commits.

    ``commit(id)`` hashes a commit once and keeps its bytes while the kept total stays
    under ``keep_bytes``; the verification that follows the walk reads them from here.
    Objects are looked up in the store's packs (and its alternates') first, as they
    were when the reader was made, then through the store itself: the lookup order
    only saves time, since every object read is hashed against its id.
    """

    def __init__(self, store: Any, keep_bytes: int = KEEP_BYTES) -> None:
        self.store = store
        self._kept: dict[bytes, bytes] = {}
        self._room = keep_bytes
        # Packs read straight from their mapping (``history.pack_read``): hashing every
        # object below makes how it was read irrelevant to what is trusted.
        self._packs = [_fast(p) for p in (
            *getattr(store, "packs", ()),
            *(p for alt in getattr(store, "alternates", ()) for p in alt.packs))]

    def _get_raw(self, oid: bytes) -> tuple[int, bytes]:
        for pack in self._packs:
            try:
                return pack.get_raw(oid)
            except KeyError:
                continue
        return self.store.get_raw(oid)

    def _read(self, oid: bytes, type_num: int) -> bytes:
        return _checked(oid, type_num, _get_raw(self._get_raw, oid, type_num))

    def commit(self, oid: bytes) -> bytes:
        raw = self._kept.get(oid)
        if raw is None:
            raw = self._read(oid, COMMIT)
            if len(raw) <= self._room:
                self._room -= len(raw)
                self._kept[oid] = raw
        return raw

    def tree(self, oid: bytes) -> bytes:
        return self._read(oid, TREE)

    def blob(self, oid: bytes) -> bytes:
        return self._read(oid, BLOB)
