"""``File``: a file written atomically under an allowed root, with a mode and owner.

Called by the reconciler through the ``Kind`` interface. The path must lie under one
of the agent's ``[files] roots`` as written (or as the root resolves). Everything
below the root is reached through descriptors: the root is opened, then each folder
below it with ``O_NOFOLLOW`` relative to the one before (``core.durable.open_dir_under``),
and the file is read, written (temp file, fsync, rename) and pruned relative to its
open folder. A symlink anywhere below the root is refused, and there is no window
between a check and a write in which a local process could swap a folder for a link
and have the agent write or delete outside the roots. A symlink planted at the target
itself is replaced, never followed. ``owner``/``group`` are names, resolved on the
device, and need the agent to run as root. Reports the SHA-256 of what it observed; a
hand edit is put right on the next pass and reported as drift.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from giter_agent.core.digest import sha256_hex
from giter_agent.core.durable import UnsafePath, atomic_writer, fsync_fd, open_dir_under
from giter_agent.core.errors import ArtifactError, ResourceError
from giter_agent.core.layout import artifact_path
from giter_agent.core.log import get_logger
from giter_agent.core.named_tuple import NamedTuple
from giter_agent.kinds.base import (
    Context,
    Done,
    Failed,
    Kind,
    Outcome,
    Retry,
    is_outcome,
    would_fail,
)
from giter_agent.kinds.fields import Field, check_declared

MAX_CONTENT = 1024 * 1024
# User and group names as useradd accepts them (and nothing a shell would care about).
_ACCOUNT_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-.")

log = get_logger("giter.kinds.file")


def in_sync(target: Path, size: int, mode: int) -> str:
    return f"{target} has the desired content ({size} bytes, mode {mode:04o})"


class Place(NamedTuple):
    """Where a File lives: the root it is under and the components below it."""

    root: Path
    folders: tuple[str, ...]
    name: str
    target: Path  # as shown in status and messages

    @contextlib.contextmanager
    def folder(self, *, create: bool = False) -> Iterator[int]:
        """The open folder that holds the file (``create``: make missing folders).

        ``UnsafePath`` when a folder below the root is a symlink or not a folder;
        ``FileNotFoundError`` when one is missing and not to be made.
        """
        root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = open_dir_under(root_fd, self.folders, create=create)
        finally:
            os.close(root_fd)
        try:
            yield fd
        finally:
            os.close(fd)

    def current(self) -> tuple[os.stat_result, bytes] | str | None:
        """What is there now, read through the open folder: None when missing, a
        sentence when it is not a regular file, else its ``fstat`` and content.
        ``UnsafePath`` when a folder below the root is a link."""
        try:
            with self.folder() as dir_fd:
                try:
                    fd = os.open(self.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                                 | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dir_fd)
                except FileNotFoundError:
                    return None
                except OSError as exc:
                    if exc.errno == errno.ELOOP:
                        return f"{self.target} is not a regular file"
                    raise
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    os.close(fd)
                    return f"{self.target} is not a regular file"
                with os.fdopen(fd, "rb") as fh:
                    return st, fh.read()
        except FileNotFoundError:
            return None

    def exists(self) -> bool:
        """Whether anything (even a link) is at the target, looked up through its folder."""
        try:
            with self.folder() as dir_fd:
                os.stat(self.name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:  # missing, or behind a link: nothing the agent would touch
            return False
        return True


def refused(place: Place, exc: UnsafePath) -> Failed:
    return Failed("PathNotAllowed", f"{place.target}: a folder below the root is a symlink "
                  f"or not a folder ({exc.strerror}); links are never followed")


def _short(digest: str) -> str:
    return digest[:12]


def _account(spec: dict[str, Any], name: str) -> str | None:
    value = spec.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 32 \
            or value[0] == "-" or not set(value) <= _ACCOUNT_CHARS:
        raise ResourceError(f"spec.{name} must be a {'user' if name == 'owner' else 'group'} "
                            f"name, got {value!r}", reason="InvalidSpec")
    return value


def check_path(spec: dict[str, Any]) -> str:
    """``spec.path``: absolute, without '.', '..' or NUL (File and Secret)."""
    path = spec["path"]
    if not isinstance(path, str) or not path.startswith("/"):
        raise ResourceError("spec.path must be an absolute path", reason="InvalidSpec")
    if "\0" in path or any(part in ("..", ".") for part in path.split("/")):
        raise ResourceError("spec.path must not contain '.', '..' or NUL",
                            reason="InvalidSpec")
    return path


def check_mode(spec: dict[str, Any], default: str) -> int:
    """``spec.mode``: an octal string without setuid, setgid or sticky bits."""
    mode = spec.get("mode", default)
    if not isinstance(mode, str) or not mode.isdigit() or len(mode) > 4 \
            or any(c > "7" for c in mode):
        raise ResourceError(f"spec.mode must be an octal string like \"{default}\", "
                            f"got {mode!r}", reason="InvalidSpec")
    if int(mode, 8) & 0o7000:
        raise ResourceError("spec.mode may not set setuid, setgid or sticky bits",
                            reason="InvalidSpec")
    return int(mode, 8)


def account_fields(spec: dict[str, Any]) -> dict[str, str | None]:
    """``spec.owner`` and ``spec.group`` (user and group names, or None)."""
    return {"owner": _account(spec, "owner"), "group": _account(spec, "group")}


# A user or group name: lower-case, digits, _ - . ; not starting with -; at most 32.
_ACCOUNT = r"[a-z0-9_.][a-z0-9_.-]{0,31}"

PATH_FIELD = Field("path", "string", "absolute path, inside a [files] roots folder",
                   required=True, pattern=r"/.*", message="must be an absolute path")
OWNER_FIELD = Field("owner", "string", "user name, resolved on the device (needs root)",
                    pattern=_ACCOUNT, message="must be a user name")
GROUP_FIELD = Field("group", "string", "group name, resolved on the device (needs root)",
                    pattern=_ACCOUNT, message="must be a group name")



def attribute_drift(target: Path, st: os.stat_result, mode: int, uid: int | None,
                    gid: int | None, spec: dict[str, Any]) -> list[str]:
    """How a file's mode, owner and group differ from the spec (File and Secret)."""
    found = []
    if st.st_mode & 0o7777 != mode:
        found.append(f"{target} mode {st.st_mode & 0o7777:04o}, want {mode:04o}")
    if uid is not None and st.st_uid != uid:
        found.append(f"{target} owner uid {st.st_uid}, want {spec['owner']} ({uid})")
    if gid is not None and st.st_gid != gid:
        found.append(f"{target} group gid {st.st_gid}, want {spec['group']} ({gid})")
    return found

def place_under_roots(path: Path, ctx: Context) -> Place | Failed:
    """Where ``path`` lies below one of the ``[files] roots`` (File, Secret, Release)."""
    if not ctx.files_roots:
        return Failed("PathNotAllowed", "the agent config has no [files] roots")
    # Matched as written: the root as configured, or as it resolves (the root
    # itself may be reached through a link; nothing below it may).
    for root in ctx.files_roots:
        for form in dict.fromkeys((Path(os.path.abspath(root)),
                                   Path(os.path.realpath(root)))):
            if form in path.parents:
                parts = path.relative_to(form).parts
                return Place(form, parts[:-1], parts[-1], path)
    return Failed("PathNotAllowed", f"{path} is outside the allowed roots "
                  f"({', '.join(map(str, ctx.files_roots))})")


class FileKind(Kind):
    kind = "File"

    DESCRIPTION = "A file written atomically under one of the agent's [files] roots."
    FIELDS: ClassVar[tuple[Field, ...]] = (
        PATH_FIELD,
        Field("content", "string", "the file's text (or contentBase64); the resource file "
              "is capped at 256 KiB"),
        Field("contentBase64", "string", "the file's bytes in base64 (or content)",
              message="is not valid base64"),
        Field("artifact", "string", "a file of the repository under artifacts/, streamed "
              "to the path (or content); up to [limits] max_artifact_mib"),
        Field("sha256", "string", "with artifact: the SHA-256 its content must have",
              pattern=r"[0-9a-f]{64}", message="must be 64 lower-case hex digits"),
        Field("mode", "string", "octal permissions, quoted: \"0644\"", default="0644",
              pattern=r"[0-7]{1,4}", message="must be an octal string like \"0644\""),
        OWNER_FIELD,
        GROUP_FIELD,
    )

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        check_declared(spec, self.FIELDS)
        path = check_path(spec)
        given = [f for f in ("content", "contentBase64", "artifact") if f in spec]
        if len(given) != 1:
            raise ResourceError("spec needs exactly one of content, contentBase64 or "
                                f"artifact (got {', '.join(given) or 'none'})",
                                reason="InvalidSpec")
        if "sha256" in spec and "artifact" not in spec:
            raise ResourceError("spec.sha256 pins an artifact: it needs spec.artifact",
                                reason="InvalidSpec")
        common = {"path": path, "mode": check_mode(spec, "0644"), **account_fields(spec),
                  "prune": spec.get("prune", True)}
        if "artifact" in spec:
            try:
                artifact = artifact_path(spec["artifact"])
            except ArtifactError as exc:
                raise ResourceError(f"spec.artifact: {exc}", reason=exc.reason) from None
            return {**common, "data": None, "artifact": artifact,
                    "sha256": spec.get("sha256")}
        if "content" in spec:
            if not isinstance(spec["content"], str):
                raise ResourceError("spec.content must be a string", reason="InvalidSpec")
            data = spec["content"].encode("utf-8")
        else:
            import base64  # a binary file's only: a text File (and a steady sync) needs none

            try:
                data = base64.b64decode(spec["contentBase64"], validate=True)
            except (ValueError, TypeError):
                raise ResourceError("spec.contentBase64 is not valid base64",
                                    reason="InvalidSpec") from None
        if len(data) > MAX_CONTENT:
            raise ResourceError(f"content is over the {MAX_CONTENT}-byte cap",
                                reason="InvalidSpec")
        return {**common, "data": data, "artifact": None, "sha256": None}

    # -- where, who, and what differs ----------------------------------------------------

    def _target(self, spec: dict[str, Any], ctx: Context) -> Place | Failed:
        return place_under_roots(Path(spec["path"]), ctx)

    @staticmethod
    def _ids(spec: dict[str, Any], ctx: Context) -> tuple[int | None, int | None] | Outcome:
        """The uid and gid the spec asks for (None: leave as the writer makes it)."""
        import grp
        import pwd

        uid = gid = None
        try:
            if spec["owner"] is not None:
                uid = pwd.getpwnam(spec["owner"]).pw_uid
        except KeyError:
            # The account may come with a package installed later: try again.
            return Retry("UnknownOwner", f"no user {spec['owner']!r} on this device", 300)
        try:
            if spec["group"] is not None:
                gid = grp.getgrnam(spec["group"]).gr_gid
        except KeyError:
            return Retry("UnknownGroup", f"no group {spec['group']!r} on this device", 300)
        euid = ctx.euid()
        if euid != 0 and ((uid is not None and uid != euid)
                          or (gid is not None and gid != os.getegid())):
            return Failed("RequiresRoot",
                          f"spec.owner/spec.group ({spec['owner'] or '-'}:{spec['group'] or '-'})"
                          f" can only be set by an agent running as root; it runs as uid {euid}")
        return uid, gid

    @staticmethod
    def _differences(place: Place, spec: dict[str, Any], uid: int | None,
                     gid: int | None) -> list[str]:
        """What differs between the file on disk and the spec (empty: in sync)."""
        data, mode = spec["data"], spec["mode"]
        target = place.target
        want = sha256_hex(data)
        found_now = place.current()
        if found_now is None:
            return [f"{target} is missing (want {len(data)} bytes, sha256 {_short(want)})"]
        if isinstance(found_now, str):
            return [found_now]
        st, content = found_now
        current = sha256_hex(content)
        found = []
        if current != want:
            found.append(f"{target} content sha256 {_short(current)}, want {_short(want)}")
        return found + attribute_drift(target, st, mode, uid, gid, spec)

    @staticmethod
    def write(place: Place, data: bytes, mode: int, uid: int | None, gid: int | None
              ) -> None:
        """Replace the file atomically through its open folder: a temp file beside it
        (mode 0600 from its creation), owner and mode set before the rename. Folders
        between the root and the file are made, inside the root only. ``UnsafePath`` if
        a folder below the root is a link; OSError if it cannot write."""
        with place.folder(create=True) as dir_fd, \
                atomic_writer(Path(place.name), mode=mode, dir_fd=dir_fd) as fh:
            fh.write(data)
            if uid is not None or gid is not None:
                # On the temp file, before the rename: the file never exists with
                # the wrong owner, not even for an instant.
                os.fchown(fh.fileno(), -1 if uid is None else uid,
                          -1 if gid is None else gid)

    # -- the Kind interface --------------------------------------------------------------

    def apply(self, key: str, spec: dict[str, Any], ctx: Context) -> Outcome:
        place = self._target(spec, ctx)
        if isinstance(place, Failed):
            return place
        if spec["artifact"] is not None:
            ids = self._ids(spec, ctx)
            if is_outcome(ids):
                return ids
            from giter_agent.kinds import artifact_content

            return artifact_content.apply(place, spec, ctx, key, *ids)
        target = place.target
        data, mode = spec["data"], spec["mode"]
        observed: dict[str, Any] = {"path": str(target),
                                    "sha256": sha256_hex(data),
                                    "mode": f"{mode:04o}"}
        for name in ("owner", "group"):
            if spec[name] is not None:
                observed[name] = spec[name]
        ids = self._ids(spec, ctx)
        if is_outcome(ids):
            return ids
        uid, gid = ids
        try:
            changes = self._differences(place, spec, uid, gid)
        except UnsafePath as exc:
            return refused(place, exc)
        except OSError as exc:
            return Retry("ReadFailed", f"cannot read {target}: {exc.strerror}", 30, observed)
        if not changes:
            return Done("Applied", in_sync(target, len(data), mode), observed)
        try:
            self.write(place, data, mode, uid, gid)
        except UnsafePath as exc:
            return refused(place, exc)
        except OSError as exc:
            return Retry("WriteFailed", f"cannot write {target}: {exc.strerror}", 30, observed)
        # The reason and message are the same whether this pass wrote or found the file
        # right, so a status commit is made when the state changes, not on every pass.
        log.info("wrote %d bytes to %s", len(data), target)
        return Done("Applied", in_sync(target, len(data), mode), observed,
                    changes=tuple(changes))

    def plan(self, key: str, spec: dict[str, Any], ctx: Context) -> str | None:
        place = self._target(spec, ctx)
        if isinstance(place, Failed):
            return would_fail(place)
        ids = self._ids(spec, ctx)
        if is_outcome(ids):
            return would_fail(ids)
        if spec["artifact"] is not None:
            from giter_agent.kinds import artifact_content

            return artifact_content.plan(place, spec, ctx, key, *ids)
        try:
            changes = self._differences(place, spec, *ids)
        except UnsafePath as exc:
            return would_fail(refused(place, exc))
        except OSError as exc:
            return f"cannot read {place.target}: {exc.strerror}"
        if not changes:
            return None
        return "would write: " + "; ".join(changes)

    def plan_prune(self, key: str, spec: dict[str, Any], ctx: Context) -> str:
        place = self._target(spec, ctx)
        if isinstance(place, Failed) or not place.exists():
            return "nothing to remove"
        return f"would remove {place.target}"

    def prune(self, key: str, spec: dict[str, Any], ctx: Context) -> None:
        place = self._target(spec, ctx)
        if isinstance(place, Failed):
            return
        try:
            with place.folder() as dir_fd:
                os.unlink(place.name, dir_fd=dir_fd)
                fsync_fd(dir_fd)
        except (FileNotFoundError, UnsafePath):
            # Gone already, or a folder on the way is now a link: what it points at
            # was never the agent's to delete.
            pass
