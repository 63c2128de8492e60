"""Packs: written durably in one go, and consolidated so their number stays logarithmic.

Every lookup of an object probes the packs one after the other, so a repository that
gains a pack per status commit (a device) or per accepted bundle (a hub) gets slower with
age. ``consolidate`` keeps the packs in a geometric progression, as git's
``repack --geometric=2`` does: sorted by object count, each pack holds at least twice as
many objects as all smaller ones together, so n objects live in at most log2(n) + 1
packs and each object is rewritten O(log n) times over its life. Only the smallest packs
are merged; the big old ones are left alone.

One merge writes at most ``MAX_MERGE_OBJECTS`` objects, so that no pass on a board
outlasts systemd's watchdog. A pack of more than half of that is therefore *settled*:
never merged again (it could only merge with packs its own size, over the bound). The
progression holds among the packs below that size, at most log2(MAX_MERGE_OBJECTS) of
them; the settled ones number at most one per ``MAX_MERGE_OBJECTS / 2`` objects (a
device with 300,000 objects: at most 30 + 15 packs), each written once and then left.

A merge copies the entries of the merged packs without inflating them
(``history.pack_copy``), so a pack holding a large artifact costs a few slices of RAM.
A merge is crash-safe: the new pack is written under a ``tmp_pack_`` name, fsynced,
renamed in, then its index likewise, then the pack folder is fsynced; only after that
is an old pack removed (its index first, so a cut leaves a pack without an index, which
no reader opens and ``state.recovery`` removes). A kill at any point leaves every object
readable from the old packs or the new one.

``write_objects`` writes a batch of new objects (a status commit's blobs, trees and
commit) as one pack with one fsync for the pack, one for its index and one for the
folder, instead of a loose file and two fsyncs per object. ``PendingObjects`` collects
such a batch in memory, with the main store behind it for reads. ``write_merging``
(for the repository's one writer) writes the batch together with the small packs a
consolidation would merge it with, in one pack, in the same order as a merge: the
batch is never written once as a pack of its own and then again as part of a merge.

Only the holder of the state lock (device) or of the hub's import lock calls
``consolidate``: it deletes packs. ``ObjectStore`` is the repository's disk store (loose
objects durable on return, never rewritten when packed). Called by ``history.store``.
"""

from __future__ import annotations

import bisect
import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dulwich.object_store import DiskObjectStore
from dulwich.objects import ObjectID, ShaFile
from dulwich.pack import (
    Pack,
    full_unpacked_object,
    iter_sha1,
    write_pack_data,
    write_pack_index,
)

from giter_agent.core.durable import fsync_dir, scratch_file
from giter_agent.core.errors import HistoryError
from giter_agent.core.named_tuple import NamedTuple

FACTOR = 2  # each kept pack holds at least this many times all smaller ones together
LOOSE_THRESHOLD = 256  # loose objects are packed once there are this many
_LOOSE_NAME = 38  # a loose object's file name: its 40 hex digits less the folder's 2
# Objects one consolidation may rewrite, beyond the two smallest packs it always may: a
# year-old device upgraded from one pack per status commit merges its backlog over a few
# passes (seconds each on a Pi), never one pass of minutes that outlasts the watchdog.
MAX_MERGE_OBJECTS = 20_000
_PACK_EXTRAS = (".bitmap", ".rev", ".mtimes")


class ObjectStore(DiskObjectStore):
    """dulwich's disk store, counting reachable objects by walking commits, not bitmaps.

    dulwich 1.2.21 switches to bitmaps as soon as one pack has a ``.bitmap``, then fails
    (FileNotFoundError) on every pack without one. A repository that ``git gc`` packed
    with bitmaps (a bare hub on a git server) and that later received a pack from
    ``promote()`` is exactly that mix, and ``write_bundle`` would fail on it.
    """

    def get_reachability_provider(self, prefer_bitmaps: bool = True) -> Any:
        return super().get_reachability_provider(prefer_bitmaps=False)

    def add_object(self, obj: Any) -> None:
        """Write a loose object, durable on return: the file (fsynced by dulwich), its
        name in ``objects/xx/``, and that folder's name in ``objects/`` if it is new.

        So anything that names the object afterwards (a ref, the state file) never
        outlives it in a power cut.
        """
        if self.contains_packed(obj.id):
            return  # accepted already: never rewritten loose (nor fsynced again)
        folder = Path(self._get_shafile_path(obj.id)).parent
        fresh = not folder.is_dir()
        super().add_object(obj)
        fsync_dir(folder)
        if fresh:
            fsync_dir(folder.parent)

    def _update_pack_cache(self) -> list[Any]:
        """dulwich's scan for new packs, then the packs put newest first, as git orders
        them (by the pack file's time), so that a lookup probes them in that order.

        dulwich probes in the order it first saw the packs, a new one last; on a device
        the recent objects (the status tip, the spec just applied) live in the newest,
        smallest packs, so every one of their lookups first probed every old settled
        pack (a year-old device has tens of them)."""
        new = super()._update_pack_cache()
        if new:
            def age(item: tuple[str, Any]) -> tuple[int, int]:
                try:
                    st = os.stat(item[1]._data_path)
                except OSError:
                    return (0, 0)  # gone: dulwich drops it at its next scan
                return (-st.st_mtime_ns, st.st_size)

            self._pack_cache = dict(sorted(self._pack_cache.items(), key=age))
        return new

    def forget_pack(self, pack: Any) -> None:
        """Stop using ``pack`` (closed, out of the cache) before its files are removed."""
        basename = os.path.basename(pack._basename)
        self._pack_cache.pop(basename, None)
        with contextlib.suppress(ValueError):
            self._pack_access_order.remove(basename)
        pack.close()



class Consolidation(NamedTuple):
    """What one ``consolidate`` did: packs merged into one, and loose objects packed."""

    merged_packs: int = 0
    packed_loose: int = 0
    objects_written: int = 0
    skipped: str | None = None  # why nothing was merged (``History.consolidate``)


def pack_file_name(pack: Pack) -> str:
    """``pack-<hex>``: the name ``pack`` has on disk, read from its path, never hashed
    (git names a pack by its checksum, this module by its ids; either is the file's)."""
    return os.path.basename(pack._basename)


def geometric_split(sizes: list[int], factor: int = FACTOR) -> int:
    """How many of the smallest packs to merge (``sizes`` ascending; 0 or >= 2).

    After merging the first k, every remaining pack holds at least ``factor`` times the
    objects of all packs before it (the merged one included), so the progression holds.
    """
    merge_upto, total = -1, 0
    for i, size in enumerate(sizes):
        if i > 0 and size < factor * total:
            merge_upto = i
        total += size
    return merge_upto + 1 if merge_upto >= 1 else 0


PackWriter = Callable[[Callable[[bytes], Any]], tuple[dict[bytes, tuple[int, int]], bytes]]


def _write_pack(pack_dir: Path, write_data: PackWriter, count: int) -> str | None:
    """Write a pack of ``count`` objects as a durable pack + index; its name, or None if
    empty. ``write_data(write)`` writes the pack data (header, entries, checksum) and
    returns its entries (binary id -> offset, CRC32) and checksum.

    The pack and its index are each written to a ``tmp_pack_`` file, fsynced and renamed
    in (pack first: a pack is visible only with its index); then the folder is fsynced.
    """
    if not count:
        return None
    fd, tmp = scratch_file(pack_dir, "tmp_pack_")
    tmp_path = Path(tmp)
    idx_tmp: Path | None = None
    try:
        with os.fdopen(fd, "wb") as fh:
            entries, checksum = write_data(fh.write)
            fh.flush()
            os.fsync(fh.fileno())
        rows = sorted((sha, offset, crc) for sha, (offset, crc) in entries.items())  # binary ids
        name = "pack-" + iter_sha1(row[0] for row in rows).decode()
        if (pack_dir / f"{name}.idx").exists():
            tmp_path.unlink()  # the same objects are already packed under this name
            return name
        fd, idx_name = scratch_file(pack_dir, "tmp_pack_")
        idx_tmp = Path(idx_name)
        with os.fdopen(fd, "wb") as fh:
            write_pack_index(fh, rows, checksum)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o444)
        os.chmod(idx_tmp, 0o444)
        os.replace(tmp_path, pack_dir / f"{name}.pack")
        os.replace(idx_tmp, pack_dir / f"{name}.idx")
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        if idx_tmp is not None:
            idx_tmp.unlink(missing_ok=True)
        raise
    fsync_dir(pack_dir)
    return name


def write_objects(store: Any, objects: list[ShaFile]) -> str | None:
    """Write ``objects`` (whole, no deltas) into ``store`` as one durable pack."""
    def write_data(write: Callable[[bytes], Any]) -> tuple[dict[bytes, tuple[int, int]], bytes]:
        records = (full_unpacked_object(o) for o in objects)
        entries, checksum = write_pack_data(write, records, num_records=len(objects),
                                            object_format=store.object_format)
        return entries, checksum

    return _write_pack(Path(store.pack_dir), write_data, len(objects))


def copy_objects(store: Any, packs: list[Pack], ids: set[bytes],
                 whole: Sequence[ShaFile] = ()) -> str | None:
    """Write the objects ``ids`` (hex) of ``packs`` into ``store`` as one durable pack,
    their entries copied without inflating them (``history.pack_copy``), after the new
    objects ``whole`` (in none of ``packs``), written whole."""
    from giter_agent.history import pack_copy

    count = len(ids) + len(whole)
    return _write_pack(Path(store.pack_dir), lambda write: pack_copy.copy_packs(
        write, packs, ids, count, store, store.object_format, whole=whole), count)


def write_merging(store: Any, objects: list[ShaFile], *, factor: int = FACTOR,
                  max_objects: int = MAX_MERGE_OBJECTS) -> str | None:
    """``write_objects``, with the packs ``consolidate`` would merge the new pack with.

    The split is ``capped_split`` over the packs and the new one (first among packs of
    its size: it is the newest). When the new pack is among those merged, one pack is
    written: the new objects whole, then the merged packs' entries copied
    (``history.pack_copy``); the merged packs are then removed as ``consolidate``
    removes them (after the new pack, its index and the folder are durable; each
    index before its pack). Otherwise, or when a merged pack is damaged, the objects
    are written as a pack of their own (``consolidate`` says what it found). Only the
    repository's one writer calls this: it deletes packs. The new pack's name."""
    if not objects:
        return None
    packs = _mergeable(store, max_objects)
    sizes = [len(p.index) for p in packs]
    at = bisect.bisect_left(sizes, len(objects))
    k = capped_split([*sizes[:at], len(objects), *sizes[at:]], factor, max_objects)
    if k <= at:  # the new pack is not among those a consolidation would merge
        return write_objects(store, objects)
    merged = packs[:k - 1]
    new = {o.id for o in objects}
    ids: set[bytes] = {sha for pack in merged for sha in pack.index if sha not in new}  # hex
    try:
        name = copy_objects(store, merged, ids, whole=objects)
    except HistoryError:
        return write_objects(store, objects)  # the merge is left to consolidate()
    _retire(store, merged, name)
    return name


class PendingObjects:
    """New objects kept in memory until ``flush()`` writes them as one pack.

    Reads see the pending objects first, then ``store``. An object ``store`` already
    has (packed or loose) is not added again: an accepted object is never rewritten.
    """

    def __init__(self, store: Any) -> None:
        self._store = store
        self._objects: dict[bytes, ShaFile] = {}
        self.object_format = store.object_format

    def add_object(self, obj: ShaFile) -> None:
        if obj.id not in self._objects and obj.id not in self._store:
            self._objects[obj.id] = obj

    def __contains__(self, sha: object) -> bool:
        return sha in self._objects or sha in self._store

    def __getitem__(self, sha: ObjectID) -> ShaFile:
        obj = self._objects.get(sha)
        return obj if obj is not None else self._store[sha]

    def get_raw(self, sha: ObjectID) -> tuple[int, bytes]:
        obj = self._objects.get(sha)
        if obj is not None:
            return obj.type_num, obj.as_raw_string()
        type_num, raw = self._store.get_raw(sha)
        return type_num, raw

    def __len__(self) -> int:
        return len(self._objects)

    def flush(self, *, merge: bool = False) -> str | None:
        """Write the pending objects as one pack (nothing when none); forget them.
        ``merge``: with the small packs a consolidation would merge them with
        (``write_merging``; the repository's one writer only)."""
        objects = list(self._objects.values())
        self._objects.clear()
        if merge:
            return write_merging(self._store, objects)
        return write_objects(self._store, objects)


def capped_split(sizes: list[int], factor: int = FACTOR,
                 max_objects: int = MAX_MERGE_OBJECTS) -> int:
    """``geometric_split``, but merging no more than ``max_objects`` objects (0 or >= 2).

    Given only packs that are not settled (``settled``), the two smallest always fit,
    so a call that should merge always makes progress.
    """
    k = geometric_split(sizes, factor)
    while k > 2 and sum(sizes[:k]) > max_objects:
        k -= 1
    return k if sum(sizes[:k]) <= max_objects else 0


def settled(objects: int, max_objects: int = MAX_MERGE_OBJECTS) -> bool:
    """Is a pack of ``objects`` objects past merging? Yes when it holds more than half of
    what one merge may write: merging it with any pack its size would break the bound.

    Without this, a device whose two smallest old packs were over the bound would merge
    its new status pack into the smaller of them at every commit: the same tens of
    thousands of objects rewritten at every sync, for ever (a new pack is always the
    smallest, so the progression is never restored).
    """
    return 2 * objects > max_objects


def count_loose(objects: Path) -> int:
    """How many loose objects ``objects`` holds: its fan-out folders that exist, listed.

    dulwich's ``count_loose_objects`` tries all 256 (a failed system call and an
    exception each for a store that packs everything, at every status commit).
    """
    try:
        folders = [e.path for e in os.scandir(objects) if len(e.name) == 2 and e.is_dir()
                   and all(c in "0123456789abcdef" for c in e.name)]
    except FileNotFoundError:
        return 0
    count = 0
    for folder in folders:
        with contextlib.suppress(FileNotFoundError):
            count += sum(1 for name in os.listdir(folder) if len(name) == _LOOSE_NAME)
    return count


def consolidate(store: Any, *, factor: int = FACTOR,
                loose_threshold: int = LOOSE_THRESHOLD,
                max_objects: int = MAX_MERGE_OBJECTS) -> Consolidation:
    """Pack loose objects once there are ``loose_threshold``, then merge the smallest
    packs so the rest form a geometric progression, at most ``max_objects`` objects a
    call (a backlog takes a few calls). The caller holds the lock that makes it the
    repository's only writer. See the module docstring for the order."""
    packed_loose = 0
    if count_loose(Path(store.path)) >= loose_threshold:
        loose = [obj for obj in (store._get_loose_object(sha)
                                 for sha in store._iter_loose_objects()) if obj is not None]
        write_objects(store, loose)
        for obj in loose:
            store.delete_loose_object(obj.id)
        packed_loose = len(loose)
    packs = _mergeable(store, max_objects)
    k = capped_split([len(p.index) for p in packs], factor, max_objects)
    if k < 2:
        return Consolidation(packed_loose=packed_loose)
    merged = packs[:k]
    ids: dict[ObjectID, None] = {}
    for pack in merged:
        for sha in pack.index:  # hex ids
            ids.setdefault(sha, None)
    name = copy_objects(store, merged, set(ids))
    _retire(store, merged, name)
    return Consolidation(merged_packs=k, packed_loose=packed_loose, objects_written=len(ids))


def _mergeable(store: Any, max_objects: int) -> list[Pack]:
    """The packs a merge may take, fewest objects first: neither settled (``settled``)
    nor kept (a pack git was told to keep, ``.keep``, is never merged away, as git never
    does).

    Ties are broken by file name: dulwich's ``Pack.name()`` hashes every id in the pack,
    which for the big old pack would make each status commit cost the whole history.
    """
    return sorted((p for p in store.packs if not settled(len(p.index), max_objects)
                   and not Path(p._basename + ".keep").exists()),
                  key=lambda p: (len(p.index), pack_file_name(p)))


def _retire(store: Any, merged: list[Pack], name: str | None) -> None:
    """Remove the ``merged`` packs, now that the pack ``name`` holding all their objects
    is durable (pack, index and folder), then fsync the folder."""
    for pack in merged:
        if pack_file_name(pack) == name:
            continue  # the merge produced a pack of the same objects: keep it
        store.forget_pack(pack)
        # Index first: a cut between the two leaves a pack without an index, which no
        # reader opens and recovery removes; never an index naming a missing pack.
        Path(pack._idx_path).unlink(missing_ok=True)
        for extra in _PACK_EXTRAS:  # what git gc writes beside a pack it made
            Path(pack._basename + extra).unlink(missing_ok=True)
        Path(pack._data_path).unlink(missing_ok=True)
    fsync_dir(Path(store.pack_dir))
