"""The device's git history: the only code that touches the object store.

A bare repository (readable by plain ``git --git-dir``) under the state directory.
Incoming bundles are streamed into a quarantine object store under
``<repo>/quarantine/<unique>`` whose alternate is the main store, checked there
(header, size caps, prerequisites, pack checksum, refs, completeness, time budget),
and only a ``promote()`` after every caller-side check moves the pack into the main
store. A fetch from a git server lands in the same kind of quarantine: the received
pack is spooled to disk and then goes through the very same gate. Refs move by
compare-and-swap, locally and on the server (``push_ref``, never forced). Outgoing
bundles (the device's status) are written from the main store straight to disk.

Called by the sync code (import, trust checks on the quarantine, ref moves, status
bundle export, network fetch and push) and by the publisher's tools.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from dulwich.errors import ApplyDeltaError, ChecksumMismatch, ObjectFormatException
from dulwich.file import FileLocked
from dulwich.object_store import BaseObjectStore, DiskObjectStore, ObjectStoreGraphWalker
from dulwich.objects import Blob, Commit, Tree, hex_to_sha
from dulwich.pack import UnresolvedDeltas, write_pack_data
from dulwich.refs import DiskRefsContainer, check_ref_format
from dulwich.repo import Repo

from giter_agent.core.budget import Budget
from giter_agent.core.durable import fsync_dir, fsync_tree, mkdir_durable, shown
from giter_agent.core.errors import (
    BundleError,
    GiterError,
    HistoryError,
    MissingPrerequisite,
    RemoteRefMoved,
    TrustError,
    UnreadableBundle,
)
from giter_agent.history import bundle as bundle_format
from giter_agent.history import chain_export, commit_layout, pack_index, packs
from giter_agent.history import tree as tree_module
from giter_agent.history.objects import has_object, oid, read_commit, ref_name

_GITLINK_MODE = 0o160000
_TYPE_NAMES = {1: "commit", 2: "tree", 3: "blob", 4: "tag"}
_OFS_DELTA, _REF_DELTA = 6, 7


class _TypeReader:
    """Objects' types, read from their pack entries' headers (following delta bases)
    without inflating them: a tree may name megabytes of blobs. The store's own packs
    first, then its alternates' (the main store behind a quarantine); a loose object is
    read whole. Pack lists and open pack files are kept for one walk; ``close()`` ends it.
    """

    def __init__(self, store: BaseObjectStore) -> None:
        self._store = store
        self._packs = [list(getattr(where, "packs", ()))
                       for where in (store, *getattr(store, "alternates", ()))]
        self._files: dict[str, BinaryIO] = {}

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files.clear()

    def type_of(self, sha: bytes, depth: int = 0) -> int:
        """The type number of ``sha``; KeyError when nobody has it."""
        binsha = hex_to_sha(oid(sha))
        for pack_list in self._packs:
            for pack in pack_list:
                try:
                    offset = pack.index.object_offset(binsha)
                except KeyError:
                    continue
                return self._type_at(pack._data_path, offset, sha, depth)
        return self._store.get_raw(oid(sha))[0]

    def _type_at(self, path: str, offset: int, sha: bytes, depth: int) -> int:
        fh = self._files.get(path)
        if fh is None:
            fh = self._files[path] = open(path, "rb")  # noqa: SIM115 - closed by close()
        while True:
            if depth > 64:
                raise HistoryError(f"object {_hex(sha)}: delta chain deeper than 64",
                                   reason="CorruptBundle")
            fh.seek(offset)
            head = fh.read(32)
            kind, i = (head[0] >> 4) & 7, 0
            while head[i] & 0x80:
                i += 1
            i += 1
            if kind == _REF_DELTA:
                return self.type_of(head[i:i + 20].hex().encode(), depth + 1)
            if kind != _OFS_DELTA:
                return kind
            byte = head[i]
            back = byte & 0x7F
            while byte & 0x80:
                i += 1
                byte = head[i]
                back = ((back + 1) << 7) | (byte & 0x7F)
            offset -= back
            depth += 1


_LOCK_NAME = "lock"
_WRITER_LOCK = "giter-writer.lock"


@dataclass(frozen=True)
class Caps:
    """Limits on one import, sized for a 512 MB board; each breach is a BundleError."""

    max_bundle_bytes: int = 512 * 2**20
    max_objects: int = 1_000_000
    max_object_bytes: int = 32 * 2**20  # checked from pack object headers BEFORE inflating
    time_budget_s: float = 600.0

    @classmethod
    def from_limits(cls, limits: Any) -> Caps:
        """The caps of a ``config.agent_toml.Limits`` (``[limits]``): the device's, and
        the hub's import gate with the device's defaults, so both refuse the same bundles."""
        return cls(max_bundle_bytes=limits.max_bundle_mib * 2**20,
                   max_objects=limits.max_objects,
                   max_object_bytes=limits.max_object_mib * 2**20,
                   time_budget_s=float(limits.time_budget_s))


def _hex(sha: bytes) -> str:
    return sha.decode("ascii", errors="replace")


def _is_ancestor(store: BaseObjectStore, ancestor: bytes, descendant: bytes) -> bool:
    """True when ``ancestor`` is ``descendant`` or reachable through its parents."""
    if ancestor == descendant:
        return True
    seen = {descendant}
    stack = [descendant]
    while stack:
        sha = stack.pop()
        try:
            commit = store[oid(sha)]
        except KeyError:
            raise HistoryError(f"commit {_hex(sha)} is missing from the history",
                               reason="UnknownCommit") from None
        if not isinstance(commit, Commit):
            raise HistoryError(f"{_hex(sha)} is not a commit", reason="UnknownCommit")
        for parent in commit.parents:
            if parent == ancestor:
                return True
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return False


def _counted(records: Iterable, total: int,
             progress: Callable[[int, int], None]) -> Iterator:
    """``records`` unchanged, reporting (done, total) as each one is taken."""
    progress(0, total)
    for done, record in enumerate(records, 1):
        yield record
        progress(done, total)


def _subject(commit: Commit) -> bytes:
    """The subject line as git prints it: the first paragraph joined onto one line."""
    paragraph = commit.message.strip().split(b"\n\n", 1)[0] if commit.message else b""
    return b" ".join(line.strip() for line in paragraph.splitlines()).strip()


def _gate_commit(store: BaseObjectStore, sha: bytes) -> commit_layout.CommitParts:
    """A quarantined commit parsed by the one strict parser, before anything else reads it.

    dulwich's own parser is lenient and can raise anything on hostile bytes (an empty
    time zone, an upper-case tree id that fails its checksum later); this one refuses
    every header layout git would not write, as a typed error of this bundle alone.
    """
    type_num, raw = store.get_raw(oid(sha))
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

    def __init__(self, history: History, directory: Path, store: DiskObjectStore,
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

    def is_ancestor(self, ancestor: bytes, descendant: bytes) -> bool:
        """Ancestry over the quarantined and accepted objects together."""
        return _is_ancestor(self.object_store, ancestor, descendant)

    def held(self, sha: bytes) -> bool:
        """Whether the device held ``sha`` before this import (it is in the main store)."""
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
        needed = self._history._new_objects(self.object_store, tips)
        packs = list(self.object_store.packs)
        junk = any(sha not in needed and sha not in main for pack in packs for sha in pack)
        names = None
        if junk:
            kept = self.object_store.add_objects(_Lazy(self.object_store, sorted(needed)))
            names = set() if kept is None else {f"pack-{kept.name().decode()}.idx"}
        src = self._directory / "pack"
        dst = Path(main.pack_dir)
        empty = {f"pack-{p.name().decode()}.idx" for p in self.object_store.packs if not len(p)}
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


class _Lazy(Sequence[tuple[Any, None]]):
    """(object, None) for each id, read from ``store`` one at a time as a pack is written."""

    def __init__(self, store: BaseObjectStore, ids: list[bytes]) -> None:
        self._store, self._ids = store, ids

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, i: int) -> tuple[Any, None]:  # type: ignore[override]
        return self._store[oid(self._ids[i])], None

    def __iter__(self) -> Iterator[tuple[Any, None]]:
        return ((self._store[oid(sha)], None) for sha in self._ids)


class _ObjectStore(DiskObjectStore):
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

    def forget_pack(self, pack: Any) -> None:
        """Stop using ``pack`` (closed, out of the cache) before its files are removed."""
        basename = os.path.basename(pack._basename)
        self._pack_cache.pop(basename, None)
        with contextlib.suppress(ValueError):
            self._pack_access_order.remove(basename)
        pack.close()


class History:
    """A bare repository of accepted history, with quarantined import and CAS refs."""

    def __init__(self, path: Path, caps: Caps = Caps()) -> None:
        self.path = Path(path)
        self.caps = caps
        self._ensure_repository()
        # Objects written here (status commits) must survive a power cut once a ref names them.
        self.object_store = _ObjectStore(str(self.path / "objects"), fsync_object_files=True)
        self._refs = DiskRefsContainer(str(self.path))
        self._quarantine_root = self.path / "quarantine"
        self._quarantine_root.mkdir(exist_ok=True)
        # No sweep here: opening is reading. Only the holder of the state lock may delete
        # what a crash left (giter_agent.state.recovery); another process may be writing
        # a pack right now.

    def close(self) -> None:
        self.object_store.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- repository set-up -------------------------------------------------------------

    def _ensure_repository(self) -> None:
        if (self.path / "HEAD").is_file():
            return
        if self.path.exists() and any(self.path.iterdir()):
            raise HistoryError(f"{self.path} exists but is not a git repository",
                               reason="NotARepository")
        mkdir_durable(self.path.parent)
        # Build it aside, make every file and folder of it durable, and rename it in: a
        # power cut leaves no repository or a whole one (giter_agent.state.recovery removes the
        # init folder of an interrupted one).
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.init-", dir=self.path.parent))
        try:
            Repo.init_bare(str(tmp), default_branch=b"main").close()
            (tmp / "quarantine").mkdir()
            fsync_tree(tmp)
            if self.path.exists():
                self.path.rmdir()  # empty (checked above): rename cannot replace it
            os.replace(tmp, self.path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(self.path.parent)

    # -- refs ----------------------------------------------------------------------------

    def ref(self, name: bytes) -> bytes | None:
        """The commit id a ref points to, or None when it does not exist."""
        try:
            return self._refs[ref_name(name)]
        except KeyError:
            return None

    def set_ref(self, name: bytes, old: bytes | None, new: bytes) -> None:
        """Point ``name`` at ``new`` if it still points at ``old`` (None: must not exist).

        Durable on return: the ref file and its directory are fsynced.
        """
        if not (name.startswith(b"refs/") and check_ref_format(ref_name(name))):
            raise ValueError(f"invalid refname {name!r}")
        try:
            target = self.object_store[oid(new)]
        except KeyError:
            raise HistoryError(f"cannot point {name.decode()} at {_hex(new)}: not in the store",
                               reason="RefTargetMissing") from None
        if not isinstance(target, Commit):
            raise HistoryError(f"cannot point {name.decode()} at {_hex(new)}: not a commit",
                               reason="RefTargetNotCommit")
        try:
            if old is None:
                ok = self._refs.add_if_new(ref_name(name), oid(new))
            else:
                ok = self._refs.set_if_equals(ref_name(name), oid(old) if old else None, oid(new))
        except FileLocked as exc:
            raise HistoryError(f"{name.decode()} is being changed by another writer"
                               " (its .lock file exists)", reason="RefChanged") from exc
        if not ok:
            now = self.ref(name)
            raise HistoryError(
                f"{name.decode()} changed under us: expected "
                f"{_hex(old) if old else 'no ref'}, found {_hex(now) if now else 'no ref'}",
                reason="RefChanged",
            )
        # The ref file, and any directory made for it (refs/heads/status/), must persist.
        directory = self.path.joinpath(*name.decode().split("/")).parent
        while directory != self.path:
            fsync_dir(directory)
            directory = directory.parent

    def pack_loose(self, threshold: int = packs.LOOSE_THRESHOLD) -> int:
        """Pack loose objects once there are ``threshold`` of them; returns how many.

        Left alone they cost a file and a filesystem block apiece. The pack and its
        index are durable before any loose object is removed (``history.packs``).
        """
        return packs.consolidate(self.object_store, loose_threshold=threshold,
                                 factor=0).packed_loose

    def consolidate(self) -> packs.Consolidation:
        """Pack loose objects and merge the smallest packs (``history.packs``).

        Deletes packs: only the repository's one writer calls it (the state lock's
        holder on a device, the import lock's on a hub).
        """
        return packs.consolidate(self.object_store)

    @contextlib.contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Be the repository's one writer (an ``flock`` on ``<repo>/giter-writer.lock``):
        a hub's import holds it, so it may ``consolidate``. Another holder is
        ``HistoryError(RepositoryLocked)``, at once. (A device's writer is the holder of
        its state lock instead.)"""
        fd = os.open(self.path / _WRITER_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise HistoryError(f"another process is writing to {self.path} (it holds "
                                   f"{_WRITER_LOCK}); try again when it is done",
                                   reason="RepositoryLocked") from None
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def new_objects(self) -> Iterator[packs.PendingObjects]:
        """A store for a batch of new objects, written as one durable pack on a clean
        exit (nothing on an error); reads see the accepted store behind it."""
        pending = packs.PendingObjects(self.object_store)
        yield pending
        pending.flush()

    def is_ancestor(self, ancestor: bytes, descendant: bytes) -> bool:
        """True when ``ancestor`` is ``descendant`` or one of its ancestors (accepted store)."""
        return _is_ancestor(self.object_store, ancestor, descendant)

    # -- import --------------------------------------------------------------------------

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
                    self._check_complete(store, list(quarantine.refs.values()), deadline)
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
        directory = Path(tempfile.mkdtemp(prefix="q-", dir=self._quarantine_root))
        lock_fd: int | None = None
        try:
            lock_fd = os.open(directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            yield directory
        finally:
            shutil.rmtree(directory, ignore_errors=True)
            if lock_fd is not None:
                os.close(lock_fd)

    def _quarantine_store(self, directory: Path) -> DiskObjectStore:
        (directory / "pack").mkdir()
        (directory / "info").mkdir()
        return DiskObjectStore(str(directory), fsync_object_files=True,
                               alternates=[str(self.path / "objects")])

    def _receive(self, bundle_path: Path, directory: Path, deadline: Budget) -> Quarantine:
        caps = self.caps
        shown_path = shown(str(bundle_path))
        try:
            # Never blocks on a FIFO or a device: only a regular file is read.
            fd = os.open(bundle_path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                raise UnreadableBundle(f"cannot read bundle {shown_path}: not a regular file")
            os.set_blocking(fd, True)
            fh = open(fd, "rb")  # noqa: SIM115 - closed by the with below
            size = st.st_size
        except OSError as exc:
            raise UnreadableBundle(
                f"cannot read bundle {shown_path}: {exc.strerror or exc}") from exc
        with fh:
            if size > caps.max_bundle_bytes:
                raise BundleError(f"bundle is {size} bytes, over max_bundle_bytes="
                                  f"{caps.max_bundle_bytes}", reason="TooLarge")
            try:
                header = bundle_format.read_header(fh)
            except OSError as exc:  # a stick pulled mid-read; never a local disk's fault
                raise UnreadableBundle(
                    f"cannot read bundle {bundle_path}: {exc.strerror or exc}") from exc
            self._check_prerequisites(header.prerequisites)
            deadline.check()

            store = self._quarantine_store(directory)
            quarantine = Quarantine(self, directory, store, header)
            try:
                self._copy_pack(fh, size - header.pack_offset, store, deadline)
                self._check_refs(store, header.refs)
                self._check_complete(store, list(header.refs.values()), deadline)
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
                                cache_bytes=self.caps.max_object_bytes)
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

    def _check_complete(self, store: DiskObjectStore, tips: list[bytes],
                        deadline: Budget) -> None:
        """Every commit, tree and blob the tips need is here, down to accepted history."""
        self._new_objects(store, tips, deadline)

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

        def new(sha: bytes, what: str) -> bool:
            """True if ``sha`` is only in quarantine (walk on), False if accepted (stop)."""
            if sha in seen:
                return False
            seen.add(sha)
            if has_object(main, sha):
                return False
            if store.contains_packed(oid(sha)):
                quarantined.add(sha)
                return True
            raise HistoryError(f"bundle is incomplete: {what} {_hex(sha)} is missing",
                               reason="IncompleteBundle")

        commits = [t for t in tips if new(t, "commit")]
        types = _TypeReader(store)
        budget = deadline or Budget(float("inf"))
        try:
            while commits:
                budget.check()
                sha = commits.pop()
                parts = _gate_commit(store, sha)
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
                    types: _TypeReader) -> None:
        """Every new tree below ``tree_id`` is one git calls sound, and names objects of
        the type its modes say; the new ones are walked on (HistoryError otherwise)."""
        trees = [tree_id]
        while trees:
            deadline.check()
            sha = trees.pop()
            type_num, raw = store.get_raw(oid(sha))
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

    # -- export --------------------------------------------------------------------------

    def push_ref(self, client: Any, path: str | bytes, name: bytes, new: bytes, *,
                 may_replace: Callable[[bytes | None], bool],
                 first_parent: bool = False) -> bytes | None:
        """Point ``name`` on a git server at ``new``: a compare-and-swap, never forced.

        ``client`` is a dulwich client (``send_pack``); the caller maps its transport
        errors. The update names the value the server advertised as the old one, so
        the server refuses it if the ref moved meanwhile. ``may_replace(old)`` decides
        whether that old value may be replaced at all (the caller allows a fast-forward
        only). Either refusal is ``RemoteRefMoved``; fetch, then
        try again. Returns the value the server held before (None: no such ref).
        With ``first_parent`` (a status chain), the pack is what ``new``'s first-parent
        chain adds to the commits the server has (``history.chain_export``): read
        back to the server's copy, not through the whole history.
        """
        self._commit(new, f"ref {name.decode(errors='replace')}")
        store = self.object_store
        before: list[bytes | None] = [None]

        def update_refs(advertised: dict[bytes, bytes]) -> dict[bytes, bytes]:
            old = advertised.get(name)
            before[0] = old
            if old == new:
                return {}  # the server already has it: nothing to send
            if not may_replace(old):
                raise RemoteRefMoved(f"the server's {name.decode()} is at "
                                   f"{_hex(old) if old else 'nothing'}, which {_hex(new)}"
                                   " does not build on")
            return {name: new}

        def generate_pack_data(have: Iterable[bytes], want: Iterable[bytes], *,
                               ofs_delta: bool = True,
                               progress: Callable[..., None] | None = None) -> Any:
            # The server's other refs point at commits we may not have (a newer spec).
            held = [h for h in have if has_object(store, h)]
            if first_parent:
                chain = chain_export.first_parent_chain(store, new, set(held))
                # Each commit the chain builds on must be one the server has (the spec a
                # status commit observed is on its branch, unless a stick brought a newer
                # one): else the full walk below finds what it lacks.
                if all(any(chain_export.reaches(store, h, b) for h in held)
                       for b in chain.boundary):
                    ids = chain_export.new_objects(store, chain)
                    return len(ids), chain_export.records(store, ids)
            return store.generate_pack_data([oid(h) for h in held],
                                            [oid(w) for w in want],
                                            ofs_delta=ofs_delta, progress=progress)

        result = client.send_pack(path, update_refs, generate_pack_data)
        problem = (result.ref_status or {}).get(name)
        if problem:
            raise RemoteRefMoved(
                f"the server refused {name.decode()} -> {_hex(new)}: {problem}")
        return before[0]

    def write_bundle(self, path: Path, refs: dict[bytes, bytes], exclude: Iterable[bytes] = (),
                     version: int = 2,
                     progress: Callable[[int, int], None] | None = None,
                     dir_fd: int | None = None, deltify_artifacts: bool = False) -> None:
        """Write a bundle of ``refs`` holding what is not reachable from ``exclude``.

        The exclude commits become the bundle's prerequisites (with their subject line,
        as git writes them). The pack streams straight into a temp file beside
        ``path``, which is fsynced and renamed into place. ``progress(done, total)`` is
        called as each object is written (the publisher shows it for large bundles).
        With ``dir_fd``, ``path`` is a name in that open folder. ``deltify_artifacts``:
        a changed file under ``artifacts/`` goes as a delta against the version the
        excluded commits hold (``history.artifact_delta``), as git's thin packs do.
        """
        for name, sha in refs.items():
            self._commit(sha, f"ref {name.decode(errors='replace')}")
        excluded = list(dict.fromkeys(exclude))
        prerequisites = [(sha, _subject(self._commit(sha, "excluded commit")))
                         for sha in excluded]
        count, records = self.object_store.generate_pack_data(
            [oid(sha) for sha in excluded], [oid(sha) for sha in dict.fromkeys(refs.values())])
        if deltify_artifacts and excluded:
            from giter_agent.history import artifact_delta

            found = artifact_delta.pairs(self.object_store, refs.values(), excluded)
            records = artifact_delta.deltify(self.object_store, records, found)
        if progress is not None:
            records = _counted(records, count, progress)

        def pack_writer(fh: BinaryIO) -> None:
            write_pack_data(fh.write, records, num_records=count,
                            object_format=self.object_store.object_format)

        bundle_format.write_bundle(Path(path), refs=refs, prerequisites=prerequisites,
                                   pack_writer=pack_writer, version=version, dir_fd=dir_fd)

    def write_chain_bundle(self, path: Path, name: bytes, tip: bytes, stop: set[bytes], *,
                           dir_fd: int | None = None) -> chain_export.Chain:
        """Write a bundle of ``name`` at ``tip`` holding what ``tip``'s first-parent chain
        adds to ``stop`` (commits the destination has) and to the chain's other parents.

        The walk reads the new commits only (``history.chain_export``); the commits it
        builds on become the prerequisites. Otherwise as ``write_bundle``.
        """
        store = self.object_store
        chain = chain_export.first_parent_chain(store, tip, stop)
        prerequisites = [(sha, _subject(self._commit(sha, "prerequisite commit")))
                         for sha in chain.boundary]
        ids = chain_export.new_objects(store, chain)

        def pack_writer(fh: BinaryIO) -> None:
            write_pack_data(fh.write, chain_export.records(store, ids), num_records=len(ids),
                            object_format=store.object_format)

        bundle_format.write_bundle(Path(path), refs={name: tip}, prerequisites=prerequisites,
                                   pack_writer=pack_writer, version=2, dir_fd=dir_fd)
        return chain

    def _commit(self, sha: bytes, what: str) -> Commit:
        try:
            obj = self.object_store[oid(sha)]
        except KeyError:
            raise HistoryError(f"{what} {_hex(sha)} is not in the history",
                               reason="UnknownCommit") from None
        if not isinstance(obj, Commit):
            raise HistoryError(f"{what} {_hex(sha)} is not a commit", reason="UnknownCommit")
        return obj
