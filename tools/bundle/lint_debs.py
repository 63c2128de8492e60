"""Lint's checks of a ``Package``'s ``.deb``: the package and version the device would find.

The device reads a ``.deb``'s control fields with ``dpkg-deb --field`` and refuses one
that is not a Debian package (``InvalidPackage``), holds another package
(``PackageMismatch``) or another version than ``spec.version`` (``VersionMismatch``):
``giter_agent.kinds.package.deb_fields``, run here on the same bytes, streamed once from
the object store into a private temp file (``giter_bundle.artifacts.blob_sha256``), with
the publisher's own ``dpkg-deb``. Without ``dpkg-deb`` (a publisher not on Debian), one
warning says the ``.deb`` files were not opened. That the ``deb`` is a file of the tree
is ``lint.release_findings``'s; over the devices' default cap, a warning.

Called by ``giter_bundle.lint.lint_tree``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from giter_agent.core.errors import Reason, TreeError
from giter_bundle.lint import Finding, specs_of_kind

KIND = "Package"


def deb_findings(store: Any, tree: bytes, folders: dict[str, list[tuple[str, bytes]]],
                 kinds: dict[str, Any]) -> list[Finding]:
    """A finding for each ``Package`` whose ``.deb`` the device would refuse."""
    specs = [(path, spec) for path, spec in specs_of_kind(folders, kinds, KIND)
             if spec["deb"] is not None]
    if specs and shutil.which("dpkg-deb") is None:
        return [Finding(specs[0][0], "NotChecked", "no dpkg-deb here (Debian package dpkg): "
                        "the package and version inside each .deb were not checked",
                        error=False)]
    out: list[Finding] = []
    for path, spec in specs:
        out += _findings(store, tree, path, spec)
    return out


def _findings(store: Any, tree: bytes, path: str, spec: dict[str, Any]) -> list[Finding]:
    from giter_agent.history.tree import file_id
    from giter_agent.kinds.base import Failed
    from giter_agent.kinds.debian import PackageTools
    from giter_agent.kinds.package import deb_fields
    from giter_bundle.artifacts import blob_sha256, caps_warnings, stored_size

    try:
        oid = file_id(store, tree, spec["deb"])
    except (TreeError, ValueError):
        return []  # release_findings says why
    if oid is None:
        return []
    out = [Finding(path, Reason.ArtifactTooLarge, f"{spec['deb']}: {warning}", error=False)
           for warning in caps_warnings(stored_size(store, oid))]
    with tempfile.TemporaryDirectory(prefix="giter-lint-") as scratch:
        deb = Path(scratch) / "package.deb"
        with deb.open("wb") as fh:
            blob_sha256(store, oid, limit=2**62, out=fh)
        found = deb_fields(spec, PackageTools.host(), deb)
    if isinstance(found, Failed):
        out.append(Finding(path, found.reason, found.message))
    return out
