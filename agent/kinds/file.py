"""``File``: a file written atomically under an allowed root, with a mode and owner.

Called by the reconciler through the ``Kind`` interface. The path must resolve
(symlinks followed for the folders) inside one of the agent's ``[files] roots``; the
file itself is replaced by rename, so a symlink planted at the target is replaced
rather than followed. ``owner``/``group`` are names, resolved on the device, and
need the agent to run as root. Reports the SHA-256 of what it observed; a hand edit
is put right on the next pass and reported as drift.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from giter_agent.core.durable import atomic_writer, fsync_dir, mkdir_durable
from giter_agent.core.errors import ResourceError
from giter_agent.kinds.base import (
    Context,
    Done,
    Failed,
    Kind,
    Outcome,
    Retry,
    would_fail,
)
from giter_agent.kinds.fields import Field, check_declared

MAX_CONTENT = 1024 * 1024
# User and group names as useradd accepts them (and nothing a shell would care about).
_ACCOUNT_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-.")

log = logging.getLogger("giter.kinds.file")


def _in_sync(target: Path, data: bytes, mode: int) -> str:
    return f"{target} has the desired content ({len(data)} bytes, mode {mode:04o})"


def _under(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == r or r in path.parents for r in roots)


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


class FileKind(Kind):
    kind = "File"

    DESCRIPTION = "A file written atomically under one of the agent's [files] roots."
    FIELDS = (
        PATH_FIELD,
        Field("content", "string", "the file's text (or contentBase64); the resource file "
              "is capped at 256 KiB"),
        Field("contentBase64", "string", "the file's bytes in base64 (or content)",
              message="is not valid base64"),
        Field("mode", "string", "octal permissions, quoted: \"0644\"", default="0644",
              pattern=r"[0-7]{1,4}", message="must be an octal string like \"0644\""),
        OWNER_FIELD,
        GROUP_FIELD,
    )

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        check_declared(spec, self.FIELDS)
        path = check_path(spec)
        if ("content" in spec) == ("contentBase64" in spec):
            raise ResourceError("spec needs exactly one of content or contentBase64",
                                reason="InvalidSpec")
        if "content" in spec:
            if not isinstance(spec["content"], str):
                raise ResourceError("spec.content must be a string", reason="InvalidSpec")
            data = spec["content"].encode("utf-8")
        else:
            try:
                data = base64.b64decode(spec["contentBase64"], validate=True)
            except (ValueError, TypeError):
                raise ResourceError("spec.contentBase64 is not valid base64",
                                    reason="InvalidSpec") from None
        if len(data) > MAX_CONTENT:
            raise ResourceError(f"content is over the {MAX_CONTENT}-byte cap",
                                reason="InvalidSpec")
        return {"path": path, "data": data, "mode": check_mode(spec, "0644"),
                **account_fields(spec),
                "prune": spec.get("prune", True)}

    # -- where, who, and what differs ----------------------------------------------------

    def _target(self, spec: dict[str, Any], ctx: Context) -> Path | Failed:
        roots = tuple(Path(os.path.realpath(r)) for r in ctx.files_roots)
        if not roots:
            return Failed("PathNotAllowed", "the agent config has no [files] roots")
        path = Path(spec["path"])
        parent = Path(os.path.realpath(path.parent))
        target = parent / path.name
        if not _under(parent, roots) or target in roots:
            return Failed("PathNotAllowed",
                          f"{path} is outside the allowed roots ({', '.join(map(str, roots))})")
        return target

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
    def _differences(target: Path, spec: dict[str, Any], uid: int | None,
                     gid: int | None) -> list[str]:
        """What differs between the file on disk and the spec (empty: in sync)."""
        data, mode = spec["data"], spec["mode"]
        want = hashlib.sha256(data).hexdigest()
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return [f"{target} is missing (want {len(data)} bytes, sha256 {_short(want)})"]
        if not os.path.isfile(target) or os.path.islink(target):
            return [f"{target} is not a regular file"]
        found = []
        current = hashlib.sha256(target.read_bytes()).hexdigest()
        if current != want:
            found.append(f"{target} content sha256 {_short(current)}, want {_short(want)}")
        if st.st_mode & 0o7777 != mode:
            found.append(f"{target} mode {st.st_mode & 0o7777:04o}, want {mode:04o}")
        if uid is not None and st.st_uid != uid:
            found.append(f"{target} owner uid {st.st_uid}, want {spec['owner']} ({uid})")
        if gid is not None and st.st_gid != gid:
            found.append(f"{target} group gid {st.st_gid}, want {spec['group']} ({gid})")
        return found

    @staticmethod
    def write(target: Path, data: bytes, mode: int, uid: int | None, gid: int | None) -> None:
        """Replace ``target`` atomically: a temp file beside it (mode 0600 from its
        creation), owner and mode set before the rename. OSError if it cannot."""
        # Folders between the root and the file are created, inside the root only.
        mkdir_durable(target.parent)  # a new folder outlives a power cut too
        with atomic_writer(target, mode=mode) as fh:
            fh.write(data)
            if uid is not None or gid is not None:
                # On the temp file, before the rename: the file never exists with
                # the wrong owner, not even for an instant.
                os.fchown(fh.fileno(), -1 if uid is None else uid,
                          -1 if gid is None else gid)

    # -- the Kind interface --------------------------------------------------------------

    def apply(self, key: str, spec: dict[str, Any], ctx: Context) -> Outcome:
        target = self._target(spec, ctx)
        if isinstance(target, Failed):
            return target
        data, mode = spec["data"], spec["mode"]
        observed: dict[str, Any] = {"path": str(target),
                                    "sha256": hashlib.sha256(data).hexdigest(),
                                    "mode": f"{mode:04o}"}
        for name in ("owner", "group"):
            if spec[name] is not None:
                observed[name] = spec[name]
        ids = self._ids(spec, ctx)
        if not isinstance(ids, tuple):
            return ids
        uid, gid = ids
        try:
            changes = self._differences(target, spec, uid, gid)
        except OSError as exc:
            return Retry("ReadFailed", f"cannot read {target}: {exc.strerror}", 30, observed)
        if not changes:
            return Done("Applied", _in_sync(target, data, mode), observed)
        try:
            self.write(target, data, mode, uid, gid)
        except OSError as exc:
            return Retry("WriteFailed", f"cannot write {target}: {exc.strerror}", 30, observed)
        # The reason and message are the same whether this pass wrote or found the file
        # right, so a status commit is made when the state changes, not on every pass.
        log.info("wrote %d bytes to %s", len(data), target)
        return Done("Applied", _in_sync(target, data, mode), observed, changes=tuple(changes))

    def plan(self, key: str, spec: dict[str, Any], ctx: Context) -> str | None:
        target = self._target(spec, ctx)
        if isinstance(target, Failed):
            return would_fail(target)
        ids = self._ids(spec, ctx)
        if not isinstance(ids, tuple):
            return would_fail(ids)
        try:
            changes = self._differences(target, spec, *ids)
        except OSError as exc:
            return f"cannot read {target}: {exc.strerror}"
        if not changes:
            return None
        return "would write: " + "; ".join(changes)

    def plan_prune(self, key: str, spec: dict[str, Any], ctx: Context) -> str:
        target = self._target(spec, ctx)
        if isinstance(target, Failed) or not os.path.lexists(target):
            return "nothing to remove"
        return f"would remove {target}"

    def prune(self, key: str, spec: dict[str, Any], ctx: Context) -> None:
        target = self._target(spec, ctx)
        if isinstance(target, Failed):
            return
        try:
            os.unlink(target)
            fsync_dir(target.parent)
        except FileNotFoundError:
            pass
