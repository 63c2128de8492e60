"""Artifacts: files of one verified spec tree under ``artifacts/``, for kinds to lay down.

A resource names an artifact by its path in the fleet repository
(``artifacts/app/server.bin``) and may pin its SHA-256. ``TreeArtifacts`` is bound to
one verified commit's tree (the applied spec) and to the store; the reconciler hands it
to kinds through ``Context.artifacts``, so a kind never touches the history itself.

- ``check_path(path)`` (``core.layout.artifact_path``): the path rules, shared with
  ``giter-bundle``: under ``artifacts/``, each component ``[a-z0-9][a-z0-9._-]*``.
- ``stat(path)``: the blob id and size, read from the trees and the pack entry headers
  (nothing is inflated); refusals are ``ArtifactError`` with a reason: a path outside
  ``artifacts/`` (``ArtifactNotAllowed``), no such file (``ArtifactMissing``), a
  symlink, folder or submodule there (``ArtifactNotAFile``), over the cap
  (``ArtifactTooLarge``).
- ``listing(folder)``: the folder's tree id and every file under it, recursively (a
  ``Release``'s tree), checked by the tree allowlist first, with ids, sizes (each under
  the cap) and the executable bit;
- ``copy(path, out)``: stream the blob into ``out`` (``history.blob_stream.copy_blob``)
  and return its SHA-256; a store that holds something else under the id is
  ``ArtifactCorrupt``.

Called by ``sync.applier`` and ``giter-agent plan`` (which build it) and, through the
context, by the kinds that read the tree: ``File`` (``stat``, ``copy``), ``Release``
(``listing``, ``copy``) and ``Package`` (``stat``, ``copy``). It is the only way a kind
reads a file of the tree, so every one of them streams and gets the same caps.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, BinaryIO

from giter_agent.core.errors import ArtifactError, GiterError, HistoryError, Reason, TreeError
from giter_agent.core.layout import artifact_path
from giter_agent.core.named_tuple import NamedTuple
from giter_agent.history.tree import file_id, list_files

SHA256_HEX = r"[0-9a-f]{64}"
check_path = artifact_path  # the path rules (core.layout), shared with giter-bundle


class ArtifactInfo(NamedTuple):
    """What the tree says about one artifact."""

    path: str
    oid: str  # the git blob id (hex)
    size: int
    executable: bool = False  # mode 100755 in the tree (``listing`` says; ``stat`` does not)


class Listing(NamedTuple):
    """A folder of the tree: its tree id (hex) and every file under it, sorted."""

    tree_id: str
    files: tuple[ArtifactInfo, ...]


class TreeArtifacts:
    """The artifacts of one verified tree, read from ``store`` (see the module doc)."""

    def __init__(self, store: Any, tree: bytes, *, max_bytes: int,
                 scratch: Path | None = None) -> None:
        self._store, self._tree = store, tree
        self.max_bytes = max_bytes
        self._scratch = scratch

    def stat(self, path: str) -> ArtifactInfo:

        check_path(path)
        try:
            oid = file_id(self._store, self._tree, path)
        except TreeError as exc:
            raise ArtifactError(f"{exc} (an artifact must be a regular file)",
                                reason=Reason.ArtifactNotAFile) from None
        if oid is None:
            raise ArtifactError(f"{path} is not in spec tree {self._tree.decode()[:12]}",
                                reason=Reason.ArtifactMissing)
        return ArtifactInfo(path, oid.decode(), self._sized(path, oid))

    def _sized(self, path: str, oid: bytes) -> int:
        """The blob's size, read from its pack header; over the cap is ArtifactTooLarge."""
        from giter_agent.history.blob_stream import blob_size

        try:
            size = blob_size(self._store, oid)
        except HistoryError as exc:
            raise self._typed(path, exc) from None
        if size > self.max_bytes:
            raise ArtifactError(f"{path} is {size} bytes, over [limits] max_artifact_mib "
                                f"({self.max_bytes // 2**20} MiB)",
                                reason=Reason.ArtifactTooLarge)
        return size

    def listing(self, folder: str) -> Listing:
        """The tree id of ``folder`` (``artifacts/app``) and every file under it, sorted,
        with its blob id and size, for a kind that lays a whole tree down; the tree
        allowlist applies to all of it first (a symlink, a submodule, an odd name
        anywhere: ``ArtifactNotAFile``, nothing listed), then the cap to each file. Each
        is then copied with ``copy(info.path, out)``."""

        check_path(folder.rstrip("/"))
        try:
            listed = list_files(self._store, self._tree, folder)
        except TreeError as exc:
            raise ArtifactError(f"{exc} (an artifact tree holds regular files and folders "
                                "only)", reason=Reason.ArtifactNotAFile) from None
        if listed is None or not listed[1]:
            raise ArtifactError(f"{folder} holds no files in spec tree "
                                f"{self._tree.decode()[:12]}", reason=Reason.ArtifactMissing)
        tree_id, files = listed
        out = []
        for path, mode, oid in files:
            out.append(ArtifactInfo(path, oid.decode(), self._sized(path, oid),
                                    executable=mode == 0o100755))
        return Listing(tree_id.decode(), tuple(out))

    def copy(self, path: str, out: BinaryIO) -> str:
        """Stream the artifact at ``path`` into ``out``; its SHA-256 (hex)."""
        from giter_agent.history.blob_stream import copy_blob

        info = self.stat(path)
        digest = hashlib.sha256()

        class _Tee:
            def write(self, data: bytes) -> None:
                digest.update(data)
                out.write(data)

        try:
            copy_blob(self._store, info.oid.encode(), _Tee(),  # type: ignore[arg-type]
                      limit=self.max_bytes, scratch=self._scratch)
        except HistoryError as exc:
            raise self._typed(path, exc) from None
        return digest.hexdigest()

    @staticmethod
    def _typed(path: str, exc: GiterError) -> ArtifactError:
        reasons: dict[str, str] = {Reason.FileTooLarge: Reason.ArtifactTooLarge,
                                   Reason.UnsafeTreeEntry: Reason.ArtifactNotAFile,
                                   Reason.MissingObject: Reason.ArtifactMissing}
        reason = reasons.get(exc.reason, Reason.ArtifactCorrupt)
        return ArtifactError(f"{path}: {exc}", reason=reason)
