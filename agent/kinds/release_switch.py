"""The release folder on disk: lay a release down, flip ``current``, keep N, sweep.

Called by ``kinds.release`` only. A release root (under a ``[files]`` root) holds::

    <root>/releases/<name>/...     one folder per release, laid down whole
    <root>/current -> releases/<name>

Everything is reached through open folders, never by path (as ``kinds.file``): the
root is opened below its ``[files]`` root without following links, and every later
step is an ``*at`` call relative to an open folder. A release is built in a temp
folder beside its final name (``releases/.<name>.<rand>.giter-tmp``), every file and
folder fsynced, then renamed into place and ``releases/`` fsynced: a folder with a
release's name is always whole. ``current`` moves by a temp symlink renamed over it,
then the root is fsynced: it names the old release or the new one, never neither.

File content is streamed from the verified tree through ``Context.artifacts``
(``history.artifacts.TreeArtifacts.copy``): memory does not grow with a file's size.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator
from typing import Any

from giter_agent.core.durable import (
    UnsafePath,
    fsync_fd,
    fsync_folders_under,
    is_temp_name,
    open_dir_under,
    temp_name,
)
from giter_agent.core.layout import CURRENT, RELEASES, link_text, release_of

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class ReleaseRoot:
    """An open release root folder and its open ``releases/`` folder."""

    def __init__(self, fd: int, releases_fd: int) -> None:
        self.fd = fd
        self.releases_fd = releases_fd

    @classmethod
    @contextlib.contextmanager
    def open(cls, base: str, parts: tuple[str, ...], *, create: bool
             ) -> Iterator[ReleaseRoot]:
        """Open ``base/parts...`` (no link below ``base``) and its ``releases/``.

        ``UnsafePath`` for a link or non-folder on the way; ``FileNotFoundError`` when
        absent and not to be made.
        """
        base_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = open_dir_under(base_fd, parts, create=create)
        finally:
            os.close(base_fd)
        try:
            releases = open_dir_under(fd, (RELEASES,), create=create)
        except BaseException:
            os.close(fd)
            raise
        try:
            yield cls(fd, releases)
        finally:
            os.close(releases)
            os.close(fd)

    # -- what is there --------------------------------------------------------------

    def current(self) -> str | None:
        """The text of the ``current`` link, None when absent. ``UnsafePath`` when
        ``current`` is there but not a symlink (a folder cannot be flipped atomically)."""
        try:
            return os.readlink(CURRENT, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise UnsafePath(errno.EEXIST, "current is not a symlink (move it away: "
                                 "the agent flips a link)") from None
            raise

    def has(self, name: str) -> bool:
        """Is ``releases/<name>`` a real folder (not a link)?"""
        try:
            st = os.stat(name, dir_fd=self.releases_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return stat.S_ISDIR(st.st_mode)

    def names(self) -> list[str]:
        """Release folders, newest switched-in first (by the time ``touch`` set)."""
        found = []
        for name in os.listdir(self.releases_fd):
            if is_temp_name(name):
                continue
            st = os.stat(name, dir_fd=self.releases_fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                found.append((st.st_mtime_ns, name))
        return [name for _t, name in sorted(found, reverse=True)]

    # -- changes --------------------------------------------------------------------

    def sweep(self) -> list[str]:
        """Remove what a cut-short pass left: temp links in the root, half-built
        release folders in ``releases/``. Returns what went."""
        gone = []
        for fd, where in ((self.fd, ""), (self.releases_fd, RELEASES + "/")):
            for name in os.listdir(fd):
                if is_temp_name(name):
                    self._remove(fd, name)
                    gone.append(where + name)
        if gone:
            fsync_fd(self.fd)
            fsync_fd(self.releases_fd)
        return gone

    def lay_down(self, name: str, files: tuple[tuple[str, bool, str], ...], artifacts: Any
                 ) -> int:
        """Build ``releases/<name>`` from ``files`` (path in the release, executable,
        path in the tree) whole, each streamed by ``artifacts.copy``, then rename it into
        place. Returns the bytes written. A folder already there is replaced (it was
        whole: only a finished folder gets the name). On any error (an ``ArtifactError``
        too) the half-built folder is removed and the error raised."""
        staging = temp_name(name)
        os.mkdir(staging, 0o755, dir_fd=self.releases_fd)
        written = 0
        try:
            stage_fd = os.open(staging, _DIR, dir_fd=self.releases_fd)
            try:
                folders: set[tuple[str, ...]] = set()
                for path, executable, source in files:
                    parts = tuple(path.split("/"))
                    for depth in range(1, len(parts)):
                        folders.add(parts[:depth])
                    written += self._write_file(stage_fd, parts, 0o755 if executable
                                                else 0o644, artifacts, source)
                fsync_folders_under(stage_fd, folders)
                os.fsync(stage_fd)
            finally:
                os.close(stage_fd)
            if self.has(name):
                self._remove(self.releases_fd, name)
            os.rename(staging, name, src_dir_fd=self.releases_fd, dst_dir_fd=self.releases_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                self._remove(self.releases_fd, staging)
            raise
        fsync_fd(self.releases_fd)
        return written

    @staticmethod
    def _write_file(stage_fd: int, parts: tuple[str, ...], mode: int, artifacts: Any,
                    source: str) -> int:
        folder = open_dir_under(stage_fd, parts[:-1], create=True)
        try:
            fd = os.open(parts[-1], _NEW_FILE, mode, dir_fd=folder)
            with os.fdopen(fd, "wb") as fh:
                artifacts.copy(source, fh)
                fh.flush()
                size = fh.tell()
                os.fchmod(fh.fileno(), mode)  # not narrowed by the umask
                os.fsync(fh.fileno())
            return size
        finally:
            os.close(folder)

    def flip(self, text: str | None) -> None:
        """Point ``current`` at ``text`` (None: remove it), atomically and durably."""
        if text is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(CURRENT, dir_fd=self.fd)
        else:
            tmp = temp_name(CURRENT)
            os.symlink(text, tmp, dir_fd=self.fd)
            try:
                os.rename(tmp, CURRENT, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=self.fd)
                raise
        os.fsync(self.fd)

    def touch(self, name: str, when: float) -> None:
        """Mark ``releases/<name>`` as switched in at ``when`` (the order ``keep`` uses),
        after every other release even when the clock stood still or went back."""
        ns = int(when * 1e9)
        for other in os.listdir(self.releases_fd):
            if other != name and not is_temp_name(other):
                st = os.stat(other, dir_fd=self.releases_fd, follow_symlinks=False)
                ns = max(ns, st.st_mtime_ns + 1)
        os.utime(name, ns=(ns, ns), dir_fd=self.releases_fd, follow_symlinks=False)

    def remove(self, name: str) -> None:
        """Remove release folder ``name`` (durably)."""
        self._remove(self.releases_fd, name)
        fsync_fd(self.releases_fd)

    def prune(self, keep: int, current: str | None) -> list[str]:
        """Remove all but ``current`` and the ``keep`` newest others; what went."""
        others = [n for n in self.names() if n != current]
        gone = others[keep:]
        for name in gone:
            self._remove(self.releases_fd, name)
        if gone:
            fsync_fd(self.releases_fd)
        return gone

    @staticmethod
    def _remove(dir_fd: int, name: str) -> None:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=dir_fd)  # never follows a link inside
        else:
            os.unlink(name, dir_fd=dir_fd)


__all__ = ["CURRENT", "RELEASES", "ReleaseRoot", "link_text", "release_of"]
