"""Refs: read, moved by compare-and-swap here, and on a git server (never forced).

``Refs`` is the repository's ref store as ``History`` uses it: ``set_ref`` moves a
loose ref only if it still holds the value the caller read (git's ``.lock`` protocol
through dulwich) and makes it durable; ``push_ref`` does the same on a server, naming
the advertised old value. Called by ``history.store``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from dulwich.file import FileLocked
from dulwich.objects import Commit
from dulwich.refs import DiskRefsContainer, check_ref_format

from giter_agent.core.durable import fsync_dir
from giter_agent.core.errors import HistoryError, RemoteRefMoved
from giter_agent.history.objects import has_object, oid, ref_name


def _hex(sha: bytes) -> str:
    return sha.decode("ascii", errors="replace")


class Refs:
    """The refs of the repository at ``path``, whose targets live in ``object_store``."""

    def __init__(self, path: Path, object_store: Any) -> None:
        self.path = path
        self.object_store = object_store
        self._refs = DiskRefsContainer(str(path))

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
        # The folders this update makes (refs/heads/status/ the first time), child first:
        # each is fsynced into its parent. A folder that was there needs no fsync of its
        # parent again (the state file, not the ref, is what a power cut falls back on:
        # state.recovery makes the refs agree with it).
        folder = self.path.joinpath(*name.decode().split("/")).parent
        made: list[Path] = []
        probe = folder
        while probe != self.path and not probe.exists():
            made.append(probe)
            probe = probe.parent
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
        # The ref file in its folder, and any folder made for it, must persist.
        fsync_dir(folder)
        for directory in made:
            fsync_dir(directory.parent)

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
        # The writers load on a push, not with every sync's refs.
        from giter_agent.history import chain_export
        from giter_agent.history.bundle_writer import commit_of

        commit_of(self.object_store, new, f"ref {name.decode(errors='replace')}")
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
                if all(b in held or any(chain_export.reaches(store, h, b, status_shape=False)
                                        for h in held) for b in chain.boundary):
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

