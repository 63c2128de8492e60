"""``File``: a file written atomically under an allowed root, with a mode.

The path must resolve (symlinks followed for the folders) inside one of the agent's
``[files] roots``; the file itself is replaced by rename, so a symlink planted at the
target is replaced rather than followed. Reports the SHA-256 of what it observed.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from agent.errors import ResourceError
from agent.fsutil import atomic_write, fsync_dir
from agent.kinds.base import Context, Done, Failed, Kind, Outcome, Retry, check_fields

MAX_CONTENT = 1024 * 1024


log = logging.getLogger("giter.kinds.file")


def _in_sync(target: Path, data: bytes, mode: int) -> str:
    return f"{target} has the desired content ({len(data)} bytes, mode {mode:04o})"


def _under(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == r or r in path.parents for r in roots)


class FileKind(Kind):
    kind = "File"

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        check_fields(spec, {"path"}, {"content", "contentBase64", "mode"})
        path = spec["path"]
        if not isinstance(path, str) or not path.startswith("/"):
            raise ResourceError("spec.path must be an absolute path", reason="InvalidSpec")
        if "\0" in path or any(part in ("..", ".") for part in path.split("/")):
            raise ResourceError("spec.path must not contain '.', '..' or NUL",
                                reason="InvalidSpec")
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
        mode = spec.get("mode", "0644")
        if not isinstance(mode, str) or not mode.isdigit() or len(mode) > 4 \
                or any(c > "7" for c in mode):
            raise ResourceError(f"spec.mode must be an octal string like \"0644\", got {mode!r}",
                                reason="InvalidSpec")
        if int(mode, 8) & 0o7000:
            raise ResourceError("spec.mode may not set setuid, setgid or sticky bits",
                                reason="InvalidSpec")
        return {"path": path, "data": data, "mode": int(mode, 8), "prune": spec.get("prune", True)}

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

    def apply(self, key: str, spec: dict[str, Any], ctx: Context) -> Outcome:
        target = self._target(spec, ctx)
        if isinstance(target, Failed):
            return target
        data, mode = spec["data"], spec["mode"]
        observed = {"path": str(target), "sha256": hashlib.sha256(data).hexdigest(),
                    "mode": f"{mode:04o}"}
        try:
            st = os.lstat(target)
            if os.path.isfile(target) and not os.path.islink(target) \
                    and (st.st_mode & 0o7777) == mode and target.read_bytes() == data:
                return Done("Applied", _in_sync(target, data, mode), observed)
        except FileNotFoundError:
            pass
        except OSError as exc:
            return Retry("ReadFailed", f"cannot read {target}: {exc.strerror}", 30, observed)
        try:
            # Folders between the root and the file are created, inside the root only.
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, data, mode=mode)
        except OSError as exc:
            return Retry("WriteFailed", f"cannot write {target}: {exc.strerror}", 30, observed)
        # The reason and message are the same whether this pass wrote or found the file
        # right, so a status commit is made when the state changes, not on every pass.
        log.info("wrote %d bytes to %s", len(data), target)
        return Done("Applied", _in_sync(target, data, mode), observed)

    def prune(self, key: str, spec: dict[str, Any], ctx: Context) -> None:
        target = self._target(spec, ctx)
        if isinstance(target, Failed):
            return
        try:
            os.unlink(target)
            fsync_dir(target.parent)
        except FileNotFoundError:
            pass
