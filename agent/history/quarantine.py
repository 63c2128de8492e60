"""The import gate's quarantine: a bundle or a fetch checked before anything is accepted.

Incoming bundles are streamed into a quarantine object store under
``<repo>/quarantine/<unique>`` whose alternate is the main store, checked there
(header, size caps, prerequisites, pack checksum, refs, completeness, time budget),
and only a ``promote()`` after every caller-side check moves the pack into the main
store. A fetch from a git server lands in the same kind of quarantine: the received
pack is spooled to disk and then goes through the very same gate.

``Gate`` is the door (``History.quarantine`` and ``History.quarantine_fetch`` open
it); ``Quarantine`` is what waits behind it. See docs/history.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from dulwich.errors import ApplyDeltaError, ChecksumMismatch, ObjectFormatException
from dulwich.object_store import DiskObjectStore, ObjectStoreGraphWalker
from dulwich.objects import Blob, Commit, Tree, hex_to_sha
from dulwich.pack import UnresolvedDeltas

from giter_agent.core.budget import Budget
from giter_agent.core.durable import fsync_dir, remove_scratch, scratch_dir
from giter_agent.core.errors import (
    BundleError,
    GiterError,
    HistoryError,
    MissingPrerequisite,
    TrustError,
)
from giter_agent.history import bundle as bundle_format
from giter_agent.history import commit_layout, pack_index
from giter_agent.history import tree as tree_module
from giter_agent.history.objects import has_object, oid, read_commit
from giter_agent.history.walk import is_ancestor
from giter_agent.history.walk_reader import WalkReader

if TYPE_CHECKING:
    from giter_agent.history.store import Caps

_LOCK_NAME = "lock"
_GITLINK_MODE = 0o160000
_TYPE_NAMES = {1: "commit", 2: "tree", 3: "blob", 4: "tag"}


class _QuarantineStore(DiskObjectStore):
    """A quarantine's objects, with the main store behind them as their alternate: the
    very store object, whose packs are open and their indexes read already (an
    alternate named by path would open and read each of them again). Closing the
    quarantine leaves the main store open: it is its owner's."""

    def __init__(self, directory: Path, main: DiskObjectStore) -> None:
        super().__init__(str(directory), fsync_object_files=True)
        self._alternates = [main]

    def close(self) -> None:
        self._alternates = None
        super().close()


def _hex(sha: bytes) -> str:
    return sha.decode("ascii", errors="replace")


def _gate_commit(get_raw: Callable[[bytes], tuple[int, bytes]], sha: bytes
                 ) -> commit_layout.CommitParts:
    """A quarantined commit parsed by the one strict parser, before anything else reads it.

    dulwich's own parser is lenient and can raise anything on hostile bytes (an empty
    time zone, an upper-case tree id that fails its checksum later); this one refuses
    every header layout git would not write, as a typed error of this bundle alone.
    """
    type_num, raw = get_raw(sha)
    if type_num != Commit.type_num:
        raise HistoryError(f"bundle is incomplete: {_hex(sha)} is a parent but not"
                           " a commit", reason="IncompleteBundle")
    try:
        return commit_layout.parse_layout(raw, _hex(sha))
    except TrustError as exc:
        raise BundleError(f"bundle holds a malformed commit: {exc}",
                          reason="MalformedCommit") from None


class Quarantine:
    """A checked bundle or fetch waiting in quarantine; ``promote()`` accepts its objects."""

    def __init__(self, history: Gate, directory: Path, store: DiskObjectStore,
                 header: bundle_format.BundleHeader | None, *,
                 refs: dict[bytes, bytes] | None = None) -> None:
        self._history = history
        self._directory = directory
        self.object_store = store  # quarantined objects, with the main store behind them
        self.header = header  # None for a fetch
        self.refs: dict[bytes, bytes] = dict(header.refs) if header else dict(refs or {})
        self.prerequisites: list[bytes] = list(header.prerequisites) if header else []
        # A fetch: what the server advertised for every ref asked about (fetched or only
        # listed), so a caller can read e.g. the hub's copy of the device's status ref.
        self.listed: dict[bytes, bytes] = dict(self.refs)
        self.promoted = False
        self._closed = False
        # The completeness check's walk: (the tips it started from, the objects only the
        # quarantine holds). ``promote`` of the same tips reuses it instead of walking
        # every new commit, tree and blob again.
        self.checked: tuple[frozenset[bytes], set[bytes]] | None = None

    def is_ancestor(self, ancestor: bytes, descendant: bytes) -> bool:
        """Ancestry over the quarantined and accepted objects together."""
        return is_ancestor(self.object_store, ancestor, descendant)

    def held(self, sha: bytes) -> bool:
        """Whether the device held ``sha`` before this import (it is in the main store).

        An object the completeness walk found only in quarantine was not held: answered
        without a lookup (through the store, a miss that lists the pack folder again)."""
        if self.checked is not None and sha in self.checked[1]:
            return False
        return has_object(self._history.object_store, sha)

    def promote(self, tips: Iterable[bytes] | None = None) -> None:
        """Move what ``tips`` (default: every ref) need into the main store durably.

        Only objects reachable from ``tips`` that the main store lacks are accepted.
        When the quarantined pack(s) hold nothing else, they move as they are (deltas
        kept); otherwise, e.g. a pack re-made with unreachable junk in it, the needed
        objects are re-packed first and the rest is dropped with the quarantine.
        """
        if self._closed:
            raise HistoryError("quarantine already closed; import the bundle again",
                               reason="QuarantineClosed")
        if self.promoted:
            return
        main = self._history.object_store
        tips = list(self.refs.values()) if tips is None else list(tips)
        if self.checked is not None and self.checked[0] == frozenset(tips):
            # The quarantine's objects are the same; the main store only gains objects
            # (a superset of what is needed is then already there: moving it is harmless).
            needed = self.checked[1]
        else:
            needed = self._history._new_objects(self.object_store, tips)
        packs = list(self.object_store.packs)
        junk = any(sha not in needed and sha not in main for pack in packs for sha in pack)
        names = None
        from giter_agent.history.packs import copy_objects, pack_file_name

        if junk:
            # Entries copied as they are (a large artifact is never inflated here).
            kept = copy_objects(self.object_store, packs, set(needed))
            names = set() if kept is None else {f"{kept}.idx"}
        src = self._directory / "pack"
        dst = Path(main.pack_dir)
        empty = {f"{pack_file_name(p)}.idx" for p in self.object_store.packs if not len(p)}
        for idx in sorted(src.glob("*.idx")):
            pack = idx.with_suffix(".pack")
            if idx.name in empty or (names is not None and idx.name not in names):
                continue  # nothing to accept, or only what the tips do not need
            if (dst / idx.name).exists():
                # Pack names hash the object ids: same name, same objects already accepted.
                # Renaming over it would briefly pair the old index with the new pack.
                continue
            # Pack before index: a pack is only visible (to git and dulwich) with its index.
            os.replace(pack, dst / pack.name)
            os.replace(idx, dst / idx.name)
        fsync_dir(dst)
        self.promoted = True

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.object_store.close()



class Gate:
    """The door into quarantine for one repository: its main store, caps and
    quarantine folder. Every check of docs/history.md, "Quarantine", is here."""

    def __init__(self, object_store: DiskObjectStore, caps: Caps, quarantine_root: Path
                 ) -> None:
        self.object_store = object_store
        self.caps = caps
        self.quarantine_root = quarantine_root

    @contextlib.contextmanager
    def quarantine(self, bundle_path: Path, budget: Budget | None = None
                   ) -> Iterator[Quarantine]:
        """Stream ``bundle_path`` into a quarantine store and check it; yield it.

        Nothing reaches the main store unless the caller calls ``promote()``. On any
        error, and on leaving the block, the quarantine directory is removed entirely.
        ``budget`` is the sync's time budget (one per sync, shared by all its bundles);
        without one the import gets ``caps.time_budget_s`` of its own.
        """
        deadline = budget or Budget(self.caps.time_budget_s)
        with self._quarantine_directory() as directory:
            quarantine = self._receive(Path(bundle_path), directory, deadline)
            try:
                yield quarantine
            finally:
                quarantine.close()

    @contextlib.contextmanager
    def quarantine_fetch(self, client: Any, path: str | bytes, refs: Sequence[bytes], *,
                         also_list: Sequence[bytes] = (),
                         haves: Iterable[bytes] = (),
                         budget: Budget | None = None) -> Iterator[Quarantine]:
        """Fetch ``refs`` from a git server into a quarantine store, checked as a bundle is.

        ``client`` is a dulwich client (``fetch_pack``); the caller maps its transport
        errors. Only ``refs`` and ``also_list`` are asked about (the server filters by
        prefix in protocol v2; we keep exact names). Objects are requested for ``refs``
        only, and only when the main store lacks them; ``haves`` (accepted commits)
        tell the server what it may leave out. The pack is spooled to disk under the
        byte and time caps, then streamed through the same gate as a bundle's pack, and
        the refs are checked for presence and completeness. ``q.refs`` holds those of
        ``refs`` the server has; ``q.listed`` adds what it said about ``also_list``.
        Nothing reaches the main store unless the caller calls ``promote()``.
        """
        deadline = budget or Budget(self.caps.time_budget_s)
        main = self.object_store
        listed: dict[bytes, bytes] = {}

        def determine_wants(advertised: dict[bytes, bytes], depth: int | None = None
                            ) -> list[bytes]:
            for name in (*refs, *also_list):
                sha = advertised.get(name)
                if sha is not None:
                    listed[name] = sha
            wants = [listed[n] for n in refs if n in listed and not has_object(main, listed[n])]
            return list(dict.fromkeys(wants))

        walker = ObjectStoreGraphWalker([oid(h) for h in haves if has_object(main, h)],
                                        lambda sha: read_commit(main, sha).parents)
        with self._quarantine_directory() as directory:
            spool_path = directory / "incoming.pack"
            with open(spool_path, "w+b") as spool:
                size = 0

                def pack_data(chunk: bytes) -> None:
                    nonlocal size
                    size += len(chunk)
                    if size > self.caps.max_bundle_bytes:
                        raise BundleError(f"the server sent more than max_bundle_bytes="
                                          f"{self.caps.max_bundle_bytes}", reason="TooLarge")
                    deadline.check()
                    spool.write(chunk)

                client.fetch_pack(path, determine_wants, walker, pack_data,
                                  progress=deadline.progress,
                                  ref_prefix=list(dict.fromkeys((*refs, *also_list))))
                store = self._quarantine_store(directory)
                quarantine = Quarantine(self, directory, store, None,
                                        refs={n: listed[n] for n in refs if n in listed})
                quarantine.listed = dict(listed)
                try:
                    if size:
                        spool.seek(0)
                        self._copy_pack(spool, size, store, deadline)
                    self._check_refs(store, quarantine.refs)
                    quarantine.checked = self._check_complete(
                        store, list(quarantine.refs.values()), deadline)
                except BaseException:
                    quarantine.close()
                    raise
            spool_path.unlink()  # checked and copied: the spool is dead weight now
            try:
                yield quarantine
            finally:
                quarantine.close()

    @contextlib.contextmanager
    def _quarantine_directory(self) -> Iterator[Path]:
        """A fresh quarantine directory, locked while it lives, removed entirely after."""
        directory = Path(scratch_dir(self.quarantine_root, "q-"))
        lock_fd: int | None = None
        try:
            lock_fd = os.open(directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            yield directory
        finally:
            remove_scratch(directory)
            if lock_fd is not None:
                os.close(lock_fd)

    def _quarantine_store(self, directory: Path) -> DiskObjectStore:
        (directory / "pack").mkdir()
        (directory / "info").mkdir()
        return _QuarantineStore(directory, self.object_store)

    def _receive(self, bundle_path: Path, directory: Path, deadline: Budget) -> Quarantine:
        fh, size = bundle_format.open_file(bundle_path, self.caps.max_bundle_bytes)
        with fh:
            header = bundle_format.header_of(fh, bundle_path)
            self._check_prerequisites(header.prerequisites)
            deadline.check()

            store = self._quarantine_store(directory)
            quarantine = Quarantine(self, directory, store, header)
            try:
                self._copy_pack(fh, size - header.pack_offset, store, deadline)
                self._check_refs(store, header.refs)
                quarantine.checked = self._check_complete(store, list(header.refs.values()),
                                                          deadline)
            except BaseException:
                quarantine.close()
                raise
        return quarantine

    def _check_prerequisites(self, prerequisites: list[bytes]) -> None:
        for sha in prerequisites:
            try:
                type_num, _ = self.object_store.get_raw(oid(sha))
            except KeyError:
                raise MissingPrerequisite(f"bundle needs commit {_hex(sha)}, which this "
                                          "device does not have") from None
            if type_num != Commit.type_num:
                raise MissingPrerequisite(f"bundle prerequisite {_hex(sha)} is not a commit")

    def _copy_pack(self, fh: BinaryIO, length: int, store: DiskObjectStore,
                   deadline: Budget) -> None:
        """Stream the pack into ``store`` through the scanner; map dulwich's errors."""
        scanner = bundle_format.PackScanner(max_objects=self.caps.max_objects,
                                            max_object_bytes=self.caps.max_object_bytes)
        reader = bundle_format.GatedPackReader(fh, length, scanner, check=deadline.check)
        try:
            # Thin packs work: deltas against prerequisite objects resolve through the
            # alternate (the main store) and the bases are appended to the new pack.
            # Not dulwich's add_thin_pack: its delta walk keeps a base per level of a
            # fanned-out chain alive, and it re-reads every object afterwards with no
            # deadline. Bases are cached up to one largest object instead.
            pack_index.add_pack(store, reader.read_all, reader.read_some, budget=deadline,
                                cache_bytes=self.caps.max_object_bytes,
                                max_object_bytes=self.caps.max_object_bytes)
            reader.drain()
        except GiterError:
            raise
        except UnresolvedDeltas as exc:
            raise HistoryError(f"bundle has deltas against objects nobody has: {exc}",
                               reason="IncompleteBundle") from exc
        except (ChecksumMismatch, ApplyDeltaError, ObjectFormatException, zlib.error,
                AssertionError, ValueError, KeyError) as exc:
            raise BundleError(f"corrupt pack in bundle: {type(exc).__name__}: {exc}",
                              reason="CorruptBundle") from exc

    def _check_refs(self, store: DiskObjectStore, refs: dict[bytes, bytes]) -> None:
        for name, sha in refs.items():
            shown = bundle_format.show_name(name)
            try:
                type_num, _ = store.get_raw(oid(sha))
            except KeyError:
                raise HistoryError(f"bundle ref {shown} points to {_hex(sha)},"
                                   " which is not in the bundle or the history",
                                   reason="RefTargetMissing") from None
            if type_num != Commit.type_num:
                raise HistoryError(f"bundle ref {shown} points to {_hex(sha)},"
                                   " which is not a commit", reason="RefTargetNotCommit")

    def _check_complete(self, store: DiskObjectStore, tips: list[bytes], deadline: Budget
                        ) -> tuple[frozenset[bytes], set[bytes]]:
        """Every commit, tree and blob the tips need is here, down to accepted history:
        (the tips, the objects only the quarantine holds) for ``promote`` to reuse."""
        return frozenset(tips), self._new_objects(store, tips, deadline)

    def _new_objects(self, store: DiskObjectStore, tips: list[bytes],
                     deadline: Budget | None = None) -> set[bytes]:
        """The objects ``tips`` need that only the quarantine has; IncompleteBundle if any
        is missing.

        Objects in the main store were complete when they were accepted, so the walk
        stops at them; everything else must be in the quarantined pack.
        """
        main = self.object_store
        seen: set[bytes] = set()
        quarantined: set[bytes] = set()
        types = WalkReader(store)

        def new(sha: bytes, what: str) -> bool:
            """True if ``sha`` is only in quarantine (walk on), False if accepted (stop)."""
            if sha in seen:
                return False
            seen.add(sha)
            binsha: bytes
            try:
                binsha = hex_to_sha(oid(sha))
            except (ValueError, TypeError):
                binsha = b""  # not an id: found nowhere below
            # The packs first, as listed when the walk began (this process is the
            # repository's one writer); then the stores themselves, which also look at
            # loose objects and packs that appeared since, before anything is refused.
            if binsha and types.in_packs(binsha, 1):
                return False
            if binsha and types.in_packs(binsha, 0):
                quarantined.add(sha)
                return True
            if has_object(main, sha):
                return False
            if store.contains_packed(oid(sha)):
                quarantined.add(sha)
                return True
            raise HistoryError(f"bundle is incomplete: {what} {_hex(sha)} is missing",
                               reason="IncompleteBundle")

        budget = deadline or Budget(float("inf"))
        try:
            commits = [t for t in tips if new(t, "commit")]
            while commits:
                budget.check()
                sha = commits.pop()
                parts = _gate_commit(types.get_raw, sha)
                if new(parts.tree, f"tree of commit {_hex(sha)}:"):
                    try:
                        self._check_tree(store, parts.tree, sha, new, budget, types)
                    except (ChecksumMismatch, ObjectFormatException, ValueError) as exc:
                        if isinstance(exc, GiterError):
                            raise
                        raise BundleError(f"bundle holds a malformed tree (in commit "
                                          f"{_hex(sha)}): {type(exc).__name__}: {exc}",
                                          reason="MalformedTree") from None
                commits.extend(p for p in parts.parents
                               if new(p, f"parent of commit {_hex(sha)}:"))
        finally:
            types.close()
        return quarantined

    @staticmethod
    def _check_tree(store: DiskObjectStore, tree_id: bytes, commit: bytes,
                    new: Callable[[bytes, str], bool], deadline: Budget,
                    types: WalkReader) -> None:
        """Every new tree below ``tree_id`` is one git calls sound, and names objects of
        the type its modes say; the new ones are walked on (HistoryError otherwise)."""
        trees = [tree_id]
        while trees:
            deadline.check()
            sha = trees.pop()
            type_num, raw = types.get_raw(sha)
            if type_num != Tree.type_num:
                raise HistoryError(f"bundle is incomplete: {_hex(sha)} (in commit"
                                   f" {_hex(commit)}) is not a tree", reason="IncompleteBundle")
            try:
                entries = tree_module.parse_tree(raw)
            except ValueError as exc:
                raise HistoryError(f"tree {_hex(sha)} of commit {_hex(commit)} is broken: "
                                   f"{exc}", reason="BrokenTree") from None
            for name, mode, entry in entries:
                if mode == _GITLINK_MODE:
                    continue  # a submodule's commit lives in another repository
                is_tree = stat.S_ISDIR(mode)
                shown = name.decode(errors="replace")
                what = f"{'tree' if is_tree else 'blob'} {shown!r} of commit {_hex(commit)}:"
                is_new = new(entry, what)
                wanted = Tree.type_num if is_tree else Blob.type_num
                found = types.type_of(entry)
                if found != wanted:
                    raise HistoryError(
                        f"tree {_hex(sha)} of commit {_hex(commit)} is broken: entry "
                        f"{shown!r} has mode {mode:o} but names a "
                        f"{_TYPE_NAMES.get(found, 'bad object')}", reason="BrokenTree")
                if is_new and is_tree:
                    trees.append(entry)

