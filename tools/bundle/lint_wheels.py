"""Lint's checks of an ``AgentUpdate``'s wheels: what the device would refuse, before it ships.

The rules are the device's own (``giter_agent.kinds.wheels``): ``select`` says which
files are wheels, whether giter-agent's wheel has the spec's ``version``, which pins
name no file and which wheels a partial set of pins leaves unchecked; ``check_pin``
compares a wheel's SHA-256 with its pin; ``check`` opens the wheel as the device
unpacks it (pure, ``Root-Is-Purelib``, no symlink or path outside the folder). Each wheel
is streamed once from the object store into an anonymous temp file, hashed on the way
(``giter_bundle.artifacts.blob_sha256``), so memory does not grow with its size.
Refusals are reported with the reason and message the device would write in its status
(``giter_agent.kinds.release.tree_refusal``). The folder itself (present, no symlink,
no odd name) is ``lint.release_findings``'s.

Called by ``giter_bundle.lint.lint_tree``.
"""

from __future__ import annotations

import tempfile
from typing import Any

from giter_agent.core.errors import ArtifactError, Reason, TreeError
from giter_bundle.lint import Finding, specs_of_kind

KIND = "AgentUpdate"


def wheel_findings(store: Any, tree: bytes, folders: dict[str, list[tuple[str, bytes]]],
                   kinds: dict[str, Any]) -> list[Finding]:
    """A finding for each thing the device would refuse in an ``AgentUpdate``'s wheels,
    and a warning for each wheel a partial set of pins leaves unchecked."""
    out: list[Finding] = []
    for path, spec in specs_of_kind(folders, kinds, KIND):
        out += _findings(store, tree, path, spec)
    return out


def _findings(store: Any, tree: bytes, path: str, spec: dict[str, Any]) -> list[Finding]:
    from giter_agent.history.tree import list_files
    from giter_agent.kinds.wheels import select
    from giter_bundle.artifacts import caps_warnings, default_cap, stored_size

    folder = spec["wheels"]
    try:
        listed = list_files(store, tree, folder)
    except (TreeError, ValueError):
        return []  # the folder's own refusal: release_findings
    if listed is None or not listed[1]:
        return []
    ids = {file_path: oid for file_path, _mode, oid in listed[1]}
    chosen = select(folder, ids, spec["version"], spec["sha256"])
    out = [Finding(path, r.reason, r.message) for r in chosen.refusals]
    out += [Finding(path, "UnpinnedWheel", f"{folder}/{name} has no line in spec.sha256, "
                    "so devices install it unchecked; add its `sha256sum` line",
                    error=False) for name in chosen.unpinned]
    cap = default_cap()
    for wheel in chosen.wheels:
        oid = ids[wheel.path]
        for warning in caps_warnings(stored_size(store, oid)):
            out.append(Finding(path, Reason.ArtifactTooLarge, f"{wheel.path}: {warning}",
                               error=False))
        out += _wheel_findings(store, oid, path, folder, wheel, cap)
    return out


def _wheel_findings(store: Any, oid: bytes, path: str, folder: str, wheel: Any,
                    cap: int) -> list[Finding]:
    """The pin and the content of one wheel, as the device checks them."""
    from giter_agent.kinds.release import tree_refusal
    from giter_agent.kinds.wheels import check, check_pin, wheel_name
    from giter_bundle.artifacts import blob_sha256

    out: list[Finding] = []
    with tempfile.TemporaryFile(prefix="giter-lint-", suffix=".whl") as fh:
        digest = blob_sha256(store, oid, limit=2**62, out=fh)
        fh.flush()
        refusals: list[ArtifactError] = []
        try:
            check_pin(wheel, digest)
        except ArtifactError as exc:
            refusals.append(exc)
        name = wheel_name(wheel.filename)
        if name is not None and name.pure:  # an impure name: select refused it already
            fh.seek(0)
            try:
                check(wheel.filename, fh, cap)
            except ArtifactError as exc:
                refusals.append(exc)
    for refused in refusals:
        failed = tree_refusal(refused, folder, "")
        # Over the default caps: devices with larger [limits] take it (caps_warnings).
        error = failed.reason != Reason.ArtifactTooLarge
        out.append(Finding(path, failed.reason, failed.message, error=error))
    return out
