"""Artifacts on the publisher's side: add one to the work tree, lint references, list them.

``add`` copies a file into ``artifacts/`` of the work tree (streamed, through the
project's atomic writer), stages it, and returns its SHA-256, size and what it will
weigh in a bundle: git stores it deflated, so the size of the deflated file (zlib's
default level, as git's ``core.compression``) is the least the next bundle carries.
``stick_free`` reads a stick's free space for the warning ``artifact add`` prints.

``lint_findings`` checks every resource that names an ``artifact`` the way a device will
(``core.layout.artifact_path``, then the file in the tree: present, a regular file,
under the default ``[limits]`` caps, and its SHA-256 equal to the resource's pin).

``carried`` lists the artifacts a bundle brings (added or changed under ``artifacts/``)
and their sizes, for ``inspect``.

Called by ``giter-bundle artifact``, ``lint`` and ``inspect``.
"""

from __future__ import annotations

import hashlib
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from giter_agent.config.agent_toml import Limits
from giter_agent.core.errors import ArtifactError, GiterError, HistoryError
from giter_agent.core.layout import ARTIFACTS_DIR, artifact_path
from giter_bundle.errors import UsageError

MiB = 2**20
_SLICE = 1 << 20


@dataclass(frozen=True)
class Added:
    """An artifact put in the work tree."""

    path: str  # artifacts/...
    sha256: str
    size: int
    deflated: int  # what git will store: the least the next bundle carries


def add(worktree: Path, source: Path, name: str | None) -> Added:
    """Copy ``source`` to ``artifacts/<name>`` (default: its file name) in ``worktree``."""
    from giter_agent.core.durable import atomic_writer, mkdir_durable

    path = f"{ARTIFACTS_DIR}/{name or source.name}"
    try:
        artifact_path(path)
    except ArtifactError as exc:
        raise UsageError(f"{exc}; name it with --as", reason=exc.reason) from None
    if not source.is_file():
        raise UsageError(f"{source} is not a regular file")
    target = worktree / path
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise UsageError(f"{path} exists in the work tree and is not a regular file")
    mkdir_durable(target.parent)
    sha256 = hashlib.sha256()
    deflate = zlib.compressobj()
    size = deflated = 0
    with source.open("rb") as src, atomic_writer(target) as out:
        while data := src.read(_SLICE):
            sha256.update(data)
            deflated += len(deflate.compress(data))
            size += len(data)
            out.write(data)
    deflated += len(deflate.flush())
    return Added(path, sha256.hexdigest(), size, deflated)


def parse_size(text: str) -> int:
    """``512M``, ``2G``, ``700000000``: bytes (K/M/G/T are powers of 1024)."""
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1:] if value[-1:] in units else ""
    number = value[:-1] if unit else value
    try:
        amount = float(number)
    except ValueError:
        raise UsageError(f"--free {text!r}: give a size such as 512M or 2G") from None
    if amount < 0:
        raise UsageError(f"--free {text!r}: a size cannot be negative")
    return int(amount * units[unit])


def stick_free(stick: Path) -> int:
    """Free bytes on the filesystem holding ``stick``."""
    try:
        return shutil.disk_usage(stick).free
    except OSError as exc:
        raise UsageError(f"--stick {stick}: {exc.strerror or exc}") from None


def default_cap(limits: Limits | None = None) -> int:
    """The largest artifact a device with default ``[limits]`` takes, in bytes."""
    limits = limits or Limits()
    return min(limits.max_artifact_mib, limits.max_object_mib) * MiB


def caps_warnings(size: int, limits: Limits | None = None) -> list[str]:
    """What a device with default ``[limits]`` would say about an artifact of ``size``."""
    limits = limits or Limits()
    cap = default_cap(limits)
    if size <= cap:
        return []
    return [f"{size} bytes is over the devices' default cap of {cap // MiB} MiB "
            "([limits] max_artifact_mib and max_object_mib): devices with default limits "
            "refuse it (ArtifactTooLarge / TooLarge)"]


# -- lint --------------------------------------------------------------------------------------

def blob_sha256(store: Any, oid: bytes, limit: int, out: BinaryIO | None = None) -> str:
    """The SHA-256 of blob ``oid``: streamed from a disk store, or read from a memory one
    (``lint`` of the work tree builds its tree in memory); its bytes are also written to
    ``out`` when given (one pass, never whole in memory)."""
    from giter_agent.core.errors import Reason
    from giter_agent.history.blob_stream import copy_blob

    digest = hashlib.sha256()

    class _Sink:
        def write(self, data: bytes) -> None:
            digest.update(data)
            if out is not None:
                out.write(data)

    sink = _Sink()
    try:
        copy_blob(store, oid, sink, limit=limit)  # type: ignore[arg-type]
    except HistoryError as exc:
        if exc.reason != Reason.MissingObject or oid not in store:
            raise
        for chunk in store[oid].as_raw_chunks():
            sink.write(chunk)
    return digest.hexdigest()


def stored_size(store: Any, oid: bytes) -> int:
    """The size of blob ``oid``, from its pack header (or a memory store's object)."""
    from giter_agent.core.errors import Reason
    from giter_agent.history.blob_stream import blob_size

    try:
        return blob_size(store, oid)
    except HistoryError as exc:
        if exc.reason != Reason.MissingObject or oid not in store:
            raise
        return len(store[oid].as_raw_string())


def lint_findings(store: Any, tree: bytes, folders: dict[str, list[tuple[str, bytes]]]
                  ) -> list[Any]:
    """A finding for each resource whose ``artifact`` a device would refuse."""
    from giter_agent.core.errors import TreeError
    from giter_agent.history.tree import file_id
    from giter_agent.spec.resources import parse_resource
    from giter_bundle.lint import Finding

    findings = []
    limits = Limits()
    for files in folders.values():
        for path, data in files:
            try:
                spec = parse_resource(path, data).spec
            except GiterError:
                continue  # reported by the resource checks
            name = spec.get("artifact")
            if name is None:
                continue
            try:
                artifact_path(name)
                oid = file_id(store, tree, name)
            except ArtifactError as exc:
                findings.append(Finding(path, exc.reason, str(exc)))
                continue
            except TreeError as exc:
                findings.append(Finding(path, "ArtifactNotAFile", f"{exc} (an artifact "
                                        "must be a regular file)"))
                continue
            if oid is None:
                findings.append(Finding(path, "ArtifactMissing", f"{name} is not in the "
                                        f"tree (giter-bundle artifact add FILE)"))
                continue
            size = stored_size(store, oid)
            for warning in caps_warnings(size, limits):
                findings.append(Finding(path, "ArtifactTooLarge", f"{name}: {warning}",
                                        error=False))
            pin = spec.get("sha256")
            if isinstance(pin, str):
                actual = blob_sha256(store, oid, limit=2**62)
                if actual != pin:
                    findings.append(Finding(path, "ArtifactMismatch", f"{name} has sha256 "
                                            f"{actual}, the resource pins {pin}"))
    return findings


# -- inspect ------------------------------------------------------------------------------------

def carried(store: Any, base_tree: bytes | None, tip_tree: bytes) -> list[dict[str, Any]]:
    """The artifacts added or changed between two trees, with their sizes."""
    from dulwich.diff_tree import tree_changes

    from giter_agent.history.objects import oid

    out = []
    prefix = f"{ARTIFACTS_DIR}/".encode()
    for change in tree_changes(store, None if base_tree is None else oid(base_tree),
                               oid(tip_tree)):
        new = change.new
        if new is None or new.path is None or new.sha is None \
                or not new.path.startswith(prefix) or new.mode is None \
                or (new.mode & 0o170000) != 0o100000:
            continue
        out.append({"change": change.type, "path": new.path.decode("utf-8", "replace"),
                    "oid": new.sha.decode(), "bytes": stored_size(store, new.sha)})
    return out


def human(size: int) -> str:
    """``3.2 MiB`` and the like."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


__all__ = ["Added", "add", "blob_sha256", "caps_warnings", "carried", "default_cap", "human",
           "lint_findings", "parse_size", "stick_free", "stored_size"]
