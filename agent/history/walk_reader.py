"""The completeness walk's reader of the objects it checks (``history.quarantine``).

Objects' types are read from their pack entries' headers (following delta bases)
without inflating them: a tree may name megabytes of blobs. Where an object is and the
quarantine's own commits and trees are read from the packs' indexes as they were when
the walk began: through the store, each miss in the main store (every new object is
one) lists the pack folder again and tries a loose file, and each read checks for a
multi-pack index first. Called by ``giter_agent.history.quarantine`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, BinaryIO

from dulwich.object_store import BaseObjectStore
from dulwich.objects import hex_to_sha

from giter_agent.core.errors import HistoryError
from giter_agent.history.blob_stream import OFS_DELTA, REF_DELTA, entry_header
from giter_agent.history.objects import oid


def _locate(binsha: bytes, pack_lists: Sequence[list[Any]]) -> tuple[Any, int] | None:
    """The first pack of ``pack_lists`` that holds ``binsha``, and the entry's offset."""
    for packs in pack_lists:
        for pack in packs:
            try:
                return pack, pack.index.object_offset(binsha)
            except KeyError:
                continue
    return None


class WalkReader:
    """One walk's reads: the store's own packs first, then its alternates' (the main
    store behind a quarantine); a loose object is read whole. Pack lists and open pack
    files are kept for the walk; ``close()`` ends it."""

    def __init__(self, store: BaseObjectStore) -> None:
        self._store = store
        self._packs = [list(getattr(where, "packs", ()))
                       for where in (store, *getattr(store, "alternates", ()))]
        self._files: dict[str, BinaryIO] = {}
        self._readers: list[Any] | None = None

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files.clear()

    def in_packs(self, binsha: bytes, where: int) -> bool:
        """Whether ``binsha`` is in the packs of the store (``where`` 0) or of its
        alternate number ``where`` - 1, as they were when the walk began."""
        return _locate(binsha, self._packs[where:where + 1]) is not None

    def get_raw(self, sha: bytes) -> tuple[int, bytes]:
        """(type, bytes) of ``sha`` from the store's own packs (``history.pack_read``),
        else through the store."""
        if self._readers is None:
            from giter_agent.history.pack_read import PackReader

            self._readers = []
            for pack in self._packs[0]:
                try:
                    self._readers.append(PackReader(pack))
                except AttributeError:  # a dulwich that keeps no mapping: its own reader
                    self._readers.append(pack)
        binsha = hex_to_sha(oid(sha))
        for reader in self._readers:
            try:
                return reader.get_raw(binsha)
            except KeyError:
                continue
        return self._store.get_raw(oid(sha))

    def type_of(self, sha: bytes, depth: int = 0) -> int:
        """The type number of ``sha``; KeyError when nobody has it."""
        found = _locate(hex_to_sha(oid(sha)), self._packs)
        if found is None:
            return self._store.get_raw(oid(sha))[0]
        return self._type_at(found[0]._data_path, found[1], sha, depth)

    def _type_at(self, path: str, offset: int, sha: bytes, depth: int) -> int:
        fh = self._files.get(path)
        if fh is None:
            fh = self._files[path] = open(path, "rb")  # noqa: SIM115 - closed by close()
        while True:
            if depth > 64:
                shown = sha.decode("ascii", errors="replace")
                raise HistoryError(f"object {shown}: delta chain deeper than 64",
                                   reason="CorruptBundle")
            # The one strict pack-entry reader (bounds checked: a malformed header is
            # CorruptObject, never an IndexError).
            kind, _size, _data, base = entry_header(fh, offset, sha)
            if kind == REF_DELTA:
                assert isinstance(base, bytes)
                return self.type_of(base.hex().encode(), depth + 1)
            if kind != OFS_DELTA:
                return kind
            assert isinstance(base, int)
            offset = base
            depth += 1
