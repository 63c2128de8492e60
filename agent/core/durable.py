"""Durable file writes: a power cut leaves either the old file or the new one.

The one discipline every durable write of the agent follows (docs/reliability.md):

1. write the new bytes to a temp file in the target's own directory, named by
   ``temp_name`` (so crash recovery can find and remove it: ``is_temp_name``);
2. fsync the temp file;
3. rename it over the target;
4. fsync the directory (and, for a directory made on the way, its parent too).

Whatever names an object (a ref naming a commit, the state file naming a ref's
target) is written only after what it names is durable. Used by every part that
writes state, status receipts, USB outbox files, File resources and the repository.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

# Every temp file the agent makes ends with this, and nothing else does: the lock holder
# removes such files after a crash (giter_agent.state.recovery) without guessing at anyone's files.
TEMP_SUFFIX = ".giter-tmp"


def temp_name(target: str) -> str:
    """A fresh, unguessable temp file name for writing ``target`` (a plain name)."""
    return f".{target}.{secrets.token_hex(4)}{TEMP_SUFFIX}"


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one of the agent's temp files (``temp_name``)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def fsync_dir(path: Path) -> None:
    """Make a rename, create or unlink in ``path`` durable (not every filesystem can).

    FAT on a USB stick and some network filesystems refuse to open or fsync a
    directory; there is nothing more to do then. An I/O error is not swallowed.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        import errno

        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


def mkdir_durable(path: Path, mode: int = 0o777) -> None:
    """``mkdir -p path``: each directory made is fsynced into its parent.

    As ``Path.mkdir(parents=True)``: ``mode`` is the last folder's, the others get 0o777
    (both less the umask).
    """
    path = Path(path)
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, mode if directory == path else 0o777)
        fsync_dir(directory.parent)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (children before their parents).

    For a tree built aside and renamed into place in one step (a new repository): the
    rename is only as durable as what it names, and a fresh directory's entries are
    not durable until the directory itself is fsynced (btrfs loses them otherwise).
    """
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(folder))


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a binary file; on clean exit it replaces ``path`` atomically and durably.

    On any error the temp file is removed (and if even that fails, crash recovery
    removes it) and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(temp_name(path.name))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    with atomic_writer(path, mode) as fh:
        fh.write(data)
