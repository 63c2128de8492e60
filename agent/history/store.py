"""The device's git history: the only code that touches the object store.

A bare repository (readable by plain ``git --git-dir``) under the state directory.
``History`` is the one facade the sync code and the publisher's tools use; each of its
responsibilities lives in a module named after it:

- ``history.quarantine``: the import gate (bundles and fetches checked in quarantine,
  ``promote()`` accepts);
- ``history.refs``: refs moved by compare-and-swap, locally and on a server;
- ``history.packs``: the object store, batches of new objects written as one pack, and
  pack consolidation (run only by the repository's one writer);
- ``history.bundle_writer`` and ``history.chain_export``: outgoing bundles and pushes,
  walking only what the destination lacks.

Called by the sync code (import, trust checks on the quarantine, ref moves, status
bundle export, network fetch and push) and by the publisher's tools.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from giter_agent.core.budget import Budget
from giter_agent.core.durable import fsync_dir, fsync_tree, mkdir_durable
from giter_agent.core.errors import HistoryError
from giter_agent.core.log import get_logger
from giter_agent.core.named_tuple import NamedTuple
from giter_agent.history import bundle, ref_files
from giter_agent.history.walk import is_ancestor

if TYPE_CHECKING:  # the writers load when a bundle is written, not on every sync; the
    # import gate when a quarantine is opened (a stick already taken opens none); the
    # object store and the ref writer (dulwich) when an object or a ref that is not a
    # plain loose file is read, or anything is written (a steady sync does neither)
    from giter_agent.history import packs
    from giter_agent.history.chain_export import Chain
    from giter_agent.history.quarantine import Gate, Quarantine
    from giter_agent.history.refs import Refs

log = get_logger("giter.history")

__all__ = ["Caps", "History", "Quarantine"]


def __getattr__(name: str) -> Any:
    if name == "Quarantine":  # re-exported, loaded with the import gate
        from giter_agent.history.quarantine import Quarantine

        return Quarantine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_WRITER_LOCK = "giter-writer.lock"


class Caps(NamedTuple):
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



class History:
    """A bare repository of accepted history, with quarantined import and CAS refs."""

    def __init__(self, path: Path, caps: Caps = Caps()) -> None:  # noqa: B008 (a value)
        self.path = Path(path)
        self.caps = caps
        self._ensure_repository()
        (self.path / "quarantine").mkdir(exist_ok=True)
        # No sweep here: opening is reading. Only the holder of the state lock may delete
        # what a crash left (giter_agent.state.recovery); another process may be writing
        # a pack right now.

    @functools.cached_property
    def object_store(self) -> packs.ObjectStore:
        """The accepted objects (dulwich's disk store), opened on first use."""
        from giter_agent.history import packs

        # Objects written here (status commits) must survive a power cut once a ref names them.
        return packs.ObjectStore(str(self.path / "objects"), fsync_object_files=True)

    @functools.cached_property
    def _refs(self) -> Refs:
        from giter_agent.history.refs import Refs

        return Refs(self.path, self.object_store)

    @functools.cached_property
    def _gate(self) -> Gate:
        """The import gate (``history.quarantine``), made when an import needs it."""
        from giter_agent.history.quarantine import Gate

        return Gate(self.object_store, self.caps, self.path / "quarantine")

    def close(self) -> None:
        if "object_store" in self.__dict__:  # opened (cached_property)
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
        import tempfile

        from dulwich.repo import Repo  # once per device: not on every sync's import path

        tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.init-", dir=self.path.parent))
        try:
            Repo.init_bare(str(tmp), default_branch=b"main").close()
            (tmp / "quarantine").mkdir()
            fsync_tree(tmp)
            if self.path.exists():
                self.path.rmdir()  # empty (checked above): rename cannot replace it
            os.replace(tmp, self.path)
        except BaseException:
            import shutil  # a failed creation only

            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(self.path.parent)

    # -- refs ----------------------------------------------------------------------------

    def ref(self, name: bytes) -> bytes | None:
        """The commit id a ref points to, or None when it does not exist."""
        try:
            return ref_files.read(self.path, name)  # a plain loose ref: no dulwich
        except ref_files.Unknown:
            return self._refs.ref(name)

    def set_ref(self, name: bytes, old: bytes | None, new: bytes) -> None:
        """Point ``name`` at ``new`` if it still points at ``old`` (None: must not exist);
        durable on return (``history.refs``)."""
        self._refs.set_ref(name, old, new)

    def push_ref(self, client: Any, path: str | bytes, name: bytes, new: bytes, *,
                 may_replace: Callable[[bytes | None], bool],
                 first_parent: bool = False) -> bytes | None:
        """Point ``name`` on a git server at ``new`` by compare-and-swap, never forced
        (``history.refs.Refs.push_ref``); the value the server held before."""
        return self._refs.push_ref(client, path, name, new, may_replace=may_replace,
                                   first_parent=first_parent)

    # -- objects and packs -----------------------------------------------------------

    def pack_loose(self, threshold: int | None = None) -> int:
        """Pack loose objects once there are ``threshold`` of them; returns how many.

        Left alone they cost a file and a filesystem block apiece. The pack and its
        index are durable before any loose object is removed (``history.packs``).
        """
        from giter_agent.history import packs

        if threshold is None:
            threshold = packs.LOOSE_THRESHOLD
        return packs.consolidate(self.object_store, loose_threshold=threshold,
                                 factor=0).packed_loose

    def consolidate(self) -> packs.Consolidation:
        """Pack loose objects and merge the smallest packs (``history.packs``).

        Deletes packs: only the repository's one writer calls it (the state lock's
        holder on a device, the import lock's on a hub). A damaged pack stops the merge,
        never the caller: the status commit or import made before it stands, nothing is
        replaced, and the merge is tried again next time (``skipped`` says why; logged).
        """
        from giter_agent.history import packs

        try:
            return packs.consolidate(self.object_store)
        except HistoryError as exc:
            log.warning("packs left as they are: %s", exc,
                        extra={"event": "consolidate-skipped", "reason": exc.reason})
            return packs.Consolidation(skipped=f"{exc.reason}: {exc}")

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
    def new_objects(self, *, merge: bool = False) -> Iterator[packs.PendingObjects]:
        """A store for a batch of new objects, written as one durable pack on a clean
        exit (nothing on an error); reads see the accepted store behind it.

        ``merge``: the caller is the repository's one writer (as for ``consolidate``),
        and the new pack also takes in the small packs a consolidation would merge it
        with (``history.packs.write_merging``), so its objects are written once."""
        from giter_agent.history import packs

        pending = packs.PendingObjects(self.object_store)
        yield pending
        pending.flush(merge=merge)

    def is_ancestor(self, ancestor: bytes, descendant: bytes) -> bool:
        """True when ``ancestor`` is ``descendant`` or one of its ancestors (accepted store)."""
        return is_ancestor(self.object_store, ancestor, descendant)


    # -- import ----------------------------------------------------------------------

    def quarantine(self, bundle_path: Path, budget: Budget | None = None
                   ) -> contextlib.AbstractContextManager[Quarantine]:
        """Stream ``bundle_path`` into a quarantine store and check it; yield it
        (``history.quarantine.Gate.quarantine``)."""
        return self._gate.quarantine(bundle_path, budget)

    def announced_refs(self, bundle_path: Path) -> dict[bytes, bytes]:
        """The refs a bundle file's header names; nothing else read, nothing written
        (``history.bundle.announced_refs``, under the same size cap as an import)."""
        return bundle.announced_refs(bundle_path, self.caps.max_bundle_bytes)

    def quarantine_fetch(self, client: Any, path: str | bytes, refs: Sequence[bytes], *,
                         also_list: Sequence[bytes] = (), haves: Iterable[bytes] = (),
                         budget: Budget | None = None
                         ) -> contextlib.AbstractContextManager[Quarantine]:
        """Fetch ``refs`` from a git server into a quarantine store, checked as a bundle
        is (``history.quarantine.Gate.quarantine_fetch``)."""
        return self._gate.quarantine_fetch(client, path, refs, also_list=also_list,
                                           haves=haves, budget=budget)

    # -- export ----------------------------------------------------------------------

    def write_bundle(self, path: Path, refs: dict[bytes, bytes], exclude: Iterable[bytes] = (),
                     version: int = 2,
                     progress: Callable[[int, int], None] | None = None,
                     dir_fd: int | None = None, deltify_artifacts: bool = False) -> None:
        """A bundle of ``refs`` holding what is not reachable from ``exclude``
        (``history.bundle_writer.write_bundle``; ``deltify_artifacts`` sends a changed
        artifact as a delta against the excluded commits' version)."""
        from giter_agent.history import bundle_writer

        bundle_writer.write_bundle(self.object_store, path, refs, exclude, version,
                                   progress, dir_fd, deltify_artifacts)

    def write_chain_bundle(self, path: Path, name: bytes, tip: bytes, stop: set[bytes], *,
                           dir_fd: int | None = None) -> Chain:
        """A bundle of what ``tip``'s first-parent chain adds to ``stop``
        (``history.bundle_writer.write_chain_bundle``)."""
        from giter_agent.history import bundle_writer

        return bundle_writer.write_chain_bundle(self.object_store, path, name, tip, stop,
                                                dir_fd=dir_fd)
