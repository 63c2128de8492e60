"""A ``File`` whose content is an artifact: a file of the verified tree under ``artifacts/``.

``spec.artifact`` names it by path (``artifacts/app/server.bin``), ``spec.sha256`` may pin
its content. The artifact is streamed from the object store into a temp file beside the
target (``core.durable.atomic_writer``: fsync, rename), through ``Context.artifacts``
(``history.artifacts.TreeArtifacts``), so memory does not grow with its size.

Comparing without reading the blob: the file in place is the artifact when its size
matches and its git blob id (SHA-1 of ``blob <size>\\0`` + content, hashed from disk in
slices) is the tree's id for it. The SHA-256 computed in the same pass is reported. What
the last pass saw is remembered (blob id, SHA-256, and the file's size, inode, mtime and
ctime), so a pass that finds the same file untouched reads nothing at all.

Every refusal fails this resource alone, names its reason, and leaves the file in place
as it was, which is reported (``observed.sha256`` of what is there): a path outside
``artifacts/`` (``ArtifactNotAllowed``, at validation), ``ArtifactMissing``,
``ArtifactNotAFile`` (a symlink, folder or submodule in the tree), ``ArtifactTooLarge``
(over ``[limits] max_artifact_mib``), ``ArtifactMismatch`` (not the pinned SHA-256; the
temp file is dropped before the rename), ``ArtifactCorrupt``.

Called by ``kinds.file`` only.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from giter_agent.core.durable import UnsafePath, atomic_writer
from giter_agent.core.errors import ArtifactError, Reason
from giter_agent.core.log import get_logger
from giter_agent.kinds.base import Context, Done, Failed, Outcome, Retry

if TYPE_CHECKING:
    from giter_agent.kinds.file import Place

log = get_logger("giter.kinds.file")

_SLICE = 1 << 16


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


def _open_in_place(place: Place, dir_fd: int) -> int | str | None:
    """A descriptor of the regular file at the target, None when missing, a sentence
    when something else is there."""
    try:
        fd = os.open(place.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
                     | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{place.target} is not a regular file"
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return f"{place.target} is not a regular file"
    return fd


def _digests(fd: int, size: int) -> tuple[str, str]:
    """(SHA-256, git blob id) of an open file of ``size`` bytes, read in slices."""
    sha256 = hashlib.sha256()
    git = hashlib.sha1(b"blob %d\0" % size)
    os.lseek(fd, 0, os.SEEK_SET)
    while data := os.read(fd, _SLICE):
        sha256.update(data)
        git.update(data)
    return sha256.hexdigest(), git.hexdigest()


class InPlace:
    """What is at the target now, compared with one artifact."""

    def __init__(self, place: Place, info: Any, memory: dict[str, Any]) -> None:
        self.st: os.stat_result | None = None
        self.problem: str | None = None  # something other than a regular file is there
        self.sha256: str | None = None  # of the content in place, when it was hashed
        self.same = False  # the content in place is the artifact
        try:
            with place.folder() as dir_fd:
                fd = _open_in_place(place, dir_fd)
                if isinstance(fd, str):
                    self.problem = fd
                    return
                if fd is None:
                    return
                try:
                    st = self.st = os.fstat(fd)
                    if (memory.get("stat") == _stat_key(st)
                            and isinstance(memory.get("sha256"), str)):
                        # The file the last pass left, untouched: nothing to read.
                        self.sha256 = memory["sha256"]
                        self.same = memory.get("oid") == info.oid
                    else:
                        self.sha256, git = _digests(fd, st.st_size)
                        self.same = st.st_size == info.size and git == info.oid
                finally:
                    os.close(fd)
        except FileNotFoundError:
            return

    def changes(self, place: Place, spec: dict[str, Any], info: Any, uid: int | None,
                gid: int | None) -> list[str]:
        from giter_agent.kinds.file import attribute_drift

        target = place.target
        if self.problem:
            return [self.problem]
        if self.st is None:
            return [f"{target} is missing (want {info.path}, {info.size} bytes)"]
        found = [] if self.same else [
            f"{target} content sha256 {(self.sha256 or '?')[:12]}, want {info.path} "
            f"({info.size} bytes)"]
        return found + attribute_drift(target, self.st, spec["mode"], uid, gid, spec)


def _observed(place: Place, spec: dict[str, Any], now: InPlace | None) -> dict[str, Any]:
    observed: dict[str, Any] = {"path": str(place.target), "artifact": spec["artifact"],
                                "mode": f"{spec['mode']:04o}"}
    if now is not None and now.sha256 is not None:
        observed["sha256"] = now.sha256
    if now is not None and now.st is not None:
        observed["size"] = now.st.st_size
    for name in ("owner", "group"):
        if spec[name] is not None:
            observed[name] = spec[name]
    return observed


def _refusal(place: Place, spec: dict[str, Any], exc: ArtifactError,
             memory: dict[str, Any]) -> Failed:
    """The artifact cannot be laid down: say why, and what stays in place."""
    try:
        now: InPlace | None = InPlace(place, _NoInfo, memory)
    except (OSError, UnsafePath):
        now = None
    if now is not None and now.st is not None:
        kept = f"; {place.target} is left as it was"
        if now.sha256:
            kept += f" (sha256 {now.sha256[:12]})"
    else:
        kept = "; nothing was written"
    return Failed(exc.reason, f"{exc}{kept}", _observed(place, spec, now))


class _NoInfo:
    """Stands in for an artifact that could not be read: nothing in place matches it."""

    oid = ""
    size = -1
    path = ""


def _source(ctx: Context, spec: dict[str, Any]) -> tuple[Any, Any]:
    """The verified spec tree to read from, and what it holds at the artifact's path."""
    source = ctx.artifacts
    if source is None:
        raise ArtifactError("no verified spec tree to read artifacts from",
                            reason=Reason.ArtifactMissing)
    return source, source.stat(spec["artifact"])


def _pin_refusal(spec: dict[str, Any], sha256: str) -> ArtifactError:
    return ArtifactError(f"{spec['artifact']} has sha256 {sha256}, but the spec pins "
                         f"{spec['sha256']}", reason=Reason.ArtifactMismatch)


def apply(place: Place, spec: dict[str, Any], ctx: Context, key: str, uid: int | None,
          gid: int | None) -> Outcome:
    """Lay the artifact down at ``place`` if it is not there already (see the module)."""
    from giter_agent.kinds.file import in_sync, refused

    memory = ctx.memory(key)
    try:
        source, info = _source(ctx, spec)
    except ArtifactError as exc:
        return _refusal(place, spec, exc, memory)
    try:
        now = InPlace(place, info, memory)
        changes = now.changes(place, spec, info, uid, gid)
    except UnsafePath as exc:
        return refused(place, exc)
    except OSError as exc:
        return Retry("ReadFailed", f"cannot read {place.target}: {exc.strerror}", 30,
                     _observed(place, spec, None))
    pin = spec["sha256"]
    if now.same and pin and now.sha256 != pin:
        # The file in place is the artifact, and the artifact is not what was pinned.
        return _refusal(place, spec, _pin_refusal(spec, now.sha256 or "?"), memory)
    message = in_sync(place.target, info.size, spec["mode"]) + f" from {info.path}"
    if not changes:
        assert now.st is not None and now.sha256 is not None
        return Done("Applied", message, _observed(place, spec, now),
                    memory=_remember(info, now.sha256, now.st))
    try:
        sha256, st = _write(place, spec, source, uid, gid)
    except ArtifactError as exc:
        return _refusal(place, spec, exc, memory)
    except UnsafePath as exc:
        return refused(place, exc)
    except OSError as exc:
        return Retry("WriteFailed", f"cannot write {place.target}: {exc.strerror}", 30,
                     _observed(place, spec, now))
    log.info("wrote %s (%d bytes) to %s", info.path, info.size, place.target)
    observed = {**_observed(place, spec, None), "sha256": sha256, "size": st.st_size}
    # A new artifact under the same path is a new spec, not drift: drift is a file that
    # no longer holds what the last pass laid down.
    drift = tuple(changes) if memory.get("oid") in (None, info.oid) else ()
    return Done("Applied", message, observed, changes=drift,
                memory=_remember(info, sha256, st))


def _remember(info: Any, sha256: str, st: os.stat_result) -> dict[str, Any]:
    return {"oid": info.oid, "sha256": sha256, "stat": _stat_key(st)}


def _write(place: Place, spec: dict[str, Any], source: Any, uid: int | None,
           gid: int | None) -> tuple[str, os.stat_result]:
    """Stream the artifact into a temp file beside the target, check the pin, set the
    owner, rename; returns its SHA-256 and the new file's stat. Any error before the
    rename removes the temp file and leaves the target as it was."""
    with place.folder(create=True) as dir_fd:
        with atomic_writer(Path(place.name), mode=spec["mode"], dir_fd=dir_fd) as fh:
            sha256 = source.copy(spec["artifact"], fh)
            if spec["sha256"] and sha256 != spec["sha256"]:
                raise _pin_refusal(spec, sha256)
            if uid is not None or gid is not None:
                os.fchown(fh.fileno(), -1 if uid is None else uid, -1 if gid is None else gid)
        return sha256, os.stat(place.name, dir_fd=dir_fd, follow_symlinks=False)


def plan(place: Place, spec: dict[str, Any], ctx: Context, key: str, uid: int | None,
         gid: int | None) -> str | None:
    """What ``apply`` would change, in one line; None when nothing."""
    from giter_agent.kinds.base import would_fail
    from giter_agent.kinds.file import refused

    try:
        _, info = _source(ctx, spec)
    except ArtifactError as exc:
        return would_fail(Failed(exc.reason, str(exc)))
    try:
        now = InPlace(place, info, ctx.memory(key))
        changes = now.changes(place, spec, info, uid, gid)
    except UnsafePath as exc:
        return would_fail(refused(place, exc))
    except OSError as exc:
        return f"cannot read {place.target}: {exc.strerror}"
    if now.same and spec["sha256"] and now.sha256 != spec["sha256"]:
        return would_fail(Failed(Reason.ArtifactMismatch,
                                 str(_pin_refusal(spec, now.sha256 or "?"))))
    if not changes:
        return None
    return "would write: " + "; ".join(changes)
