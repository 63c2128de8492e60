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

Where the folder itself is not to be trusted (a USB stick, a ``[files]`` root others
may write in), callers open the folder once and pass its descriptor (``dir_fd``):
every later step is relative to that open folder, so nobody can swap a path component
for a symlink between a check and a write. ``open_dir_under`` opens such a folder one
component at a time without following links; ``read_regular`` reads a file only if it
is a regular file under a size cap, without following a link or blocking on a FIFO.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, TypeVar

T = TypeVar("T")

# Open flags for a file that must be read as it is named: never through a symlink,
# never blocking on a FIFO or a device, never taking a terminal.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


# Every temp file the agent makes ends with this, and nothing else does: the lock holder
# removes such files after a crash (giter_agent.state.recovery) without guessing at anyone's files.
TEMP_SUFFIX = ".giter-tmp"


def temp_name(target: str) -> str:
    """A fresh, unguessable temp file name for writing ``target`` (a plain name).

    ``os.urandom`` is what ``secrets.token_hex`` reads; ``secrets`` itself would load
    OpenSSL (through ``hmac``) into the daemon, which writes the state file too."""
    return f".{target}.{os.urandom(4).hex()}{TEMP_SUFFIX}"


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one of the agent's temp files (``temp_name``)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


class UnsafePath(OSError):
    """A path component is a symlink, not a folder, not a regular file, or too large."""


def shown(name: str | bytes) -> str:
    """``name`` safe to print on one line: control characters and bytes that are not
    UTF-8 (surrogate-escaped by ``os.listdir``) written as escapes (``\\n``, ``\\xff``).

    Idempotent (what it returns is printable), so a message may be passed through it
    again wherever it is shown.
    """
    if isinstance(name, bytes):
        name = name.decode("utf-8", "surrogateescape")
    out = []
    for ch in name:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as os.fsdecode keeps it
            out.append(f"\\x{code - 0xDC00:02x}")
        elif not ch.isprintable():
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def open_dir_under(root_fd: int, parts: Sequence[str], *, create: bool = False,
                   mode: int = 0o755, dev: int | None = None) -> int:
    """Open the folder ``root/parts[0]/parts[1]/...`` one component at a time.

    No component may be a symlink (``O_NOFOLLOW``) or anything but a folder; with
    ``dev``, each must be on that filesystem (no mount point of something else in
    between). With ``create``, missing folders are made (``mkdir`` relative to the
    open parent, so never anywhere else). Returns a new descriptor; the caller closes
    it. ``UnsafePath`` for a link or a non-folder, ``FileNotFoundError`` when missing.
    """
    fd = os.dup(root_fd)
    try:
        for part in parts:
            if part in ("", ".", "..") or "/" in part or "\0" in part:
                raise UnsafePath(errno.EINVAL, f"{shown(part)!r} is not a folder name")
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, mode, dir_fd=fd)
                    fsync_fd(fd)
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePath(exc.errno, f"{shown(part)} is a symlink or not a "
                                                "folder") from None
                raise
            os.close(fd)
            fd = child
            if dev is not None and os.fstat(fd).st_dev != dev:
                raise UnsafePath(errno.EXDEV, f"{shown(part)} is on another filesystem")
        return fd
    except BaseException:
        os.close(fd)
        raise


def fsync_folders_under(root_fd: int, folders: Iterable[Sequence[str]]) -> None:
    """fsync each folder ``root/parts...`` made while laying a tree down, children
    before parents: a fresh folder's entries are durable only once it is fsynced."""
    for parts in sorted(folders, key=len, reverse=True):
        sub = open_dir_under(root_fd, parts)
        try:
            os.fsync(sub)
        finally:
            os.close(sub)


def read_regular(name: str | Path, max_bytes: int, *, dir_fd: int | None = None,
                 dev: int | None = None) -> bytes:
    """The bytes of ``name`` if it is a regular file of at most ``max_bytes``.

    The type and size are checked on the open descriptor (``fstat``), before a byte is
    read; a symlink, FIFO, device or socket is ``UnsafePath`` and never blocks; so is a
    file that grows past the cap while it is read, and (with ``dev``) one on another
    filesystem.
    """
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(exc.errno, f"{shown(str(name))} is a symlink") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(errno.EINVAL, f"{shown(str(name))} is not a regular file")
        if dev is not None and st.st_dev != dev:
            raise UnsafePath(errno.EXDEV, f"{shown(str(name))} is on another filesystem")
        if st.st_size > max_bytes:
            raise UnsafePath(errno.EFBIG, f"{shown(str(name))} is {st.st_size} bytes, over "
                                          f"the {max_bytes}-byte cap")
        os.set_blocking(fd, True)
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 16, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise UnsafePath(errno.EFBIG, f"{shown(str(name))} grew past the "
                                          f"{max_bytes}-byte cap while read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def fsync_fd(fd: int) -> None:
    """fsync an open folder (FAT and some network filesystems refuse: ignored)."""
    with contextlib.suppress(OSError):
        os.fsync(fd)


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


# Scratch files and folders (a quarantine, a pack being written): made as tempfile's
# mkstemp and mkdtemp make them, without loading tempfile (and shutil, random with it)
# into every sync of new commits.
_SCRATCH_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _fresh(folder: str | os.PathLike[str], prefix: str, make: Callable[[str], T]
           ) -> tuple[T, str]:
    """``make(path)`` of a new ``<prefix><random>`` path in ``folder``, tried again with
    another name while the name is taken."""
    while True:
        path = os.path.join(folder, f"{prefix}{os.urandom(6).hex()}")
        try:
            return make(path), path
        except FileExistsError:
            continue


def scratch_file(folder: str | os.PathLike[str], prefix: str) -> tuple[int, str]:
    """(descriptor, path) of a new file ``<prefix><random>`` in ``folder``, mode 0600,
    open for reading and writing: ``tempfile.mkstemp(dir=folder, prefix=prefix)``."""
    return _fresh(folder, prefix, lambda path: os.open(path, _SCRATCH_FLAGS, 0o600))


def scratch_dir(folder: str | os.PathLike[str], prefix: str) -> str:
    """A new folder ``<prefix><random>`` in ``folder``, mode 0700:
    ``tempfile.mkdtemp(dir=folder, prefix=prefix)``."""
    return _fresh(folder, prefix, lambda path: os.mkdir(path, 0o700))[1]


def remove_scratch(path: str | os.PathLike[str]) -> None:
    """Remove a scratch folder and all under it, never following a link, ignoring what
    cannot be removed (``shutil.rmtree(path, ignore_errors=True)``; crash recovery
    removes a leftover one)."""
    try:
        entries = list(os.scandir(path))
    except OSError:
        entries = []
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                remove_scratch(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            pass
    with contextlib.suppress(OSError):
        os.rmdir(path)


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
def atomic_writer(path: Path, mode: int = 0o644, *,
                  dir_fd: int | None = None, fsync: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file; on clean exit it replaces ``path`` atomically and durably.

    ``fsync=False`` is for derived data only (a cache its reader checks and can rebuild,
    such as ``sync.spec_cache``): still replaced in one rename, never half-written by
    a crash of the process, but neither file nor folder is fsynced, so after a power
    cut the reader may find the old file, the new one, or one it must reject.

    With ``dir_fd``, ``path`` is a bare name in that open folder and nothing is
    resolved by path again: the temp file, the rename and the folder's fsync all go
    through the descriptor (``*at`` calls). A symlink at ``path`` is replaced, never
    followed.

    On any error the temp file is removed (and if even that fails, crash recovery
    removes it) and ``path`` is left as it was.
    """
    if dir_fd is not None:
        assert fsync, "a write through a pinned folder is always durable"
        with _atomic_writer_at(dir_fd, str(path), mode) as fh:
            yield fh
        return
    path = Path(path)
    tmp = path.with_name(temp_name(path.name))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync:
        fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes, mode: int = 0o644, *,
                 dir_fd: int | None = None, fsync: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically and durably (``dir_fd``, ``fsync``: see
    ``atomic_writer``)."""
    with atomic_writer(path, mode, dir_fd=dir_fd, fsync=fsync) as fh:
        fh.write(data)


@contextlib.contextmanager
def _atomic_writer_at(dir_fd: int, name: str, mode: int) -> Iterator[BinaryIO]:
    if "/" in name or name in ("", ".", ".."):
        raise UnsafePath(errno.EINVAL, f"{shown(name)!r} is not a file name")
    # The same temp name as the path-based writer: one recovery sweep finds both.
    tmp = temp_name(name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    fsync_fd(dir_fd)
