"""The work tree an operator edits: what it holds, and staging it the way ``git add -A`` does.

Files are what git would commit: tracked ones and untracked ones that ``.gitignore``
does not exclude. A symlink is kept as a symlink (mode 120000) and never followed, so
``lint`` sees what a commit would carry (which the agent refuses) rather than what the
link points to. Staging goes through dulwich's index, so ``git status`` agrees
afterwards.

Called by ``giter-bundle`` commit (bump, lint, stage), lint (the work tree) and
enroll/init (staging the files they commit).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from dulwich.object_store import MemoryObjectStore
from dulwich.objects import Blob

Files = dict[str, tuple[int, bytes]]  # path in the repository -> (git mode, content)


def candidate_paths(repo: Any) -> list[str]:
    """Tracked paths (present or deleted) and untracked, not ignored ones."""
    from dulwich import porcelain

    index = repo.open_index()
    tracked = {p.decode("utf-8", "surrogateescape") for p in index.paths()}
    untracked = set(porcelain.get_untracked_paths(repo.path, repo.path, index,
                                                  exclude_ignored=True))
    return sorted(tracked | untracked)


def _under(path: str, prefixes: tuple[str, ...] | None) -> bool:
    return prefixes is None or any(path == p or path.startswith(p + "/") for p in prefixes)


def read_files(root: Path, paths: list[str], prefixes: tuple[str, ...] | None = None) -> Files:
    """Mode and content of each path that exists (under ``prefixes`` when given)."""
    files: Files = {}
    for path in paths:
        if not _under(path, prefixes):
            continue
        full = root / path
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            continue  # deleted: staging will drop it
        if stat.S_ISLNK(st.st_mode):
            files[path] = (0o120000, os.fsencode(os.readlink(full)))
        elif stat.S_ISREG(st.st_mode):
            mode = 0o100755 if st.st_mode & 0o111 else 0o100644
            files[path] = (mode, full.read_bytes())
    return files


class _Overlay(MemoryObjectStore):
    """The work tree's objects in memory, over the repository's history (read only), so
    a rollout's ``baseline`` commit reads from a work-tree lint or render."""

    def __init__(self, history: Any) -> None:
        super().__init__()
        self._history = history

    def __getitem__(self, name: Any) -> Any:
        try:
            return super().__getitem__(name)
        except KeyError:
            return self._history[name]

    def get_raw(self, name: Any) -> tuple[int, bytes]:
        try:
            return super().get_raw(name)
        except KeyError:
            raw: tuple[int, bytes] = self._history.get_raw(name)
            return raw

    def __contains__(self, name: Any) -> bool:
        return super().__contains__(name) or bool(name in self._history)


def tree_of(files: Files, history: Any = None) -> tuple[MemoryObjectStore, bytes]:
    """A tree of ``files`` built in memory, for reading with ``history.tree`` and ``lint``
    (over ``history``, an object store, when given)."""
    from dulwich.index import commit_tree

    store = MemoryObjectStore() if history is None else _Overlay(history)
    entries = []
    for path, (mode, data) in sorted(files.items()):
        blob = Blob.from_string(data)
        store.add_object(blob)
        entries.append((path.encode("utf-8", "surrogateescape"), blob.id, mode))
    return store, commit_tree(store, entries)


def stage(repo: Any, paths: list[str]) -> bytes:
    """Stage ``paths`` (deleted ones are dropped) and return the index's tree id."""
    if paths:
        repo.get_worktree().stage(paths)
    return repo.open_index().commit(repo.object_store)
