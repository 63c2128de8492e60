"""The verified spec commit's tree, as the kinds that lay down artifacts read it.

Kinds never import the history layer (``.importlinter``); the applier hands them a
``SpecTree`` for the commit it reconciles (``Context.spec_tree``). It lists a folder of
the tree through the same allowlist as every other read (``history.tree.list_files``:
regular files and folders only, no symlink, submodule or odd name) and reads a blob by
its id. Only blobs reachable from the verified commit's tree are served.
"""

from __future__ import annotations

from dataclasses import dataclass

from dulwich.object_store import BaseObjectStore
from dulwich.objects import Blob, ObjectID

from giter_agent.core.errors import TreeError


@dataclass(frozen=True)
class Listing:
    """A folder of the spec tree: its tree id and its files, relative to it."""

    tree_id: str
    files: tuple[tuple[str, bool, str], ...]  # (relative path, executable, blob id)


class SpecTree:
    """Read-only view of one verified commit's tree."""

    def __init__(self, object_store: BaseObjectStore, tree_id: bytes) -> None:
        self._store = object_store
        self._tree = tree_id
        self._served: set[str] = set()

    def listing(self, folder: str) -> Listing | None:
        """The files under ``folder`` (None when absent); ``TreeError`` when unsafe."""
        from giter_agent.history.tree import list_files

        listed = list_files(self._store, self._tree, folder)
        if listed is None:
            return None
        tree_id, files = listed
        cut = len(folder.strip("/")) + 1
        out = tuple((path[cut:], mode == 0o100755, sha.decode()) for path, mode, sha in files)
        self._served.update(sha for _p, _x, sha in out)
        return Listing(tree_id.decode(), out)

    def file(self, path: str) -> str | None:
        """The blob id of the regular file at ``path`` (None when absent); its folder
        must pass the allowlist whole (``TreeError`` otherwise)."""
        folder, _, name = path.strip("/").rpartition("/")
        listing = self.listing(folder)
        if listing is None:
            return None
        for rel, _executable, blob_id in listing.files:
            if rel == name:
                return blob_id
        return None

    def blob(self, blob_id: str) -> bytes:
        """The content of a blob a ``listing`` named (the import caps bound its size)."""
        if blob_id not in self._served:
            raise TreeError(f"blob {blob_id} was not listed from the spec tree",
                            reason="UnsafeTreeEntry")
        try:
            obj = self._store[ObjectID(blob_id.encode())]
        except KeyError:
            raise TreeError(f"object {blob_id} is missing", reason="MissingObject") from None
        if not isinstance(obj, Blob):
            raise TreeError(f"object {blob_id} is not a blob", reason="UnsafeTreeEntry")
        return obj.as_raw_string()
