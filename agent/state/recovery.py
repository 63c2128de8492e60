"""Crash recovery of a state directory: the first thing the state lock's holder does.

A power cut, a kill or a full disk can stop the agent between any two system calls.
Every write is made so that what is left is either the old or the new version
(``giter_agent.core.durable``), but some debris is unavoidable: lock files of git's
locking protocol (``refs/heads/main.lock``, ``objects/xx/<id>.lock``), temp files, a
quarantine directory, a pack without its index, a repository init folder. Left
alone, each of them wedges every later sync. And the state file (the truth) and the
refs (its mirror for git tools) can be one step apart.

``recover`` puts all of that right, in this one place. Only the holder of the state
lock may call it (``giter_agent.state.store.state_lock``): it deletes files that a live
writer would still be using, and with the lock held there is no live writer. Nobody else
deletes anything. The daemon recovers when it first takes the lock, after a pass
that failed, and whenever another process held the lock since its own last pass.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

from giter_agent.core.durable import fsync_dir, is_temp_name
from giter_agent.core.log import get_logger

log = get_logger("giter.recovery")

REPO_NAME = "repo.git"
QUARANTINE = "quarantine"
# Folders ``History`` builds a new repository in before renaming it into place.
INIT_PREFIX = f".{REPO_NAME}.init-"
# The standard layout of a bare repository; anything missing is made again.
REPO_DIRS = ("objects", "objects/info", "objects/pack", "refs", "refs/heads", "refs/tags")
# Temp files the agent named before TEMP_SUFFIX existed (state and device key).
_OLD_TEMP = re.compile(r"\.(state\.msgpack|device_key(\.pub)?)\.[^/]+\.tmp")
# A walk of a [files] root after a crash stops after this many entries.
MAX_ROOT_ENTRIES = 50_000


class Recovered:
    """What ``recover`` removed or repaired (for the log, and for tests)."""

    __slots__ = ("made", "refs", "removed")

    def __init__(self, removed: list[str] | None = None, made: list[str] | None = None,
                 refs: list[str] | None = None) -> None:
        self.removed: list[str] = [] if removed is None else removed
        self.made: list[str] = [] if made is None else made
        self.refs: list[str] = [] if refs is None else refs

    def __bool__(self) -> bool:
        return bool(self.removed or self.made or self.refs)


def recover(state_dir: Path, *, refs: Iterable[tuple[bytes, str | None]] = (),
            files_roots: Iterable[Path] = (), sweep: bool = True) -> Recovered:
    """Bring ``state_dir`` back to a state every later pass accepts. Lock holder only.

    ``refs``: (ref name, commit id the state file names or None) pairs; each ref is
    moved to (or, for None, removed to agree with) the state file. ``sweep``: also
    remove crash debris (the daemon skips that between its own clean passes).
    ``files_roots``: the ``[files]`` roots, searched for the File kind's temp files.
    """
    state_dir = Path(state_dir)
    done = Recovered()
    repo = state_dir / REPO_NAME
    if sweep:
        _sweep_state_dir(state_dir, done)
        _sweep_repository(repo, done)
        for root in files_roots:
            _sweep_root(Path(root), done)
    if (repo / "HEAD").is_file():
        _agree_refs(repo, refs, done)
    if done:
        log.warning("recovered %s after an interrupted run: removed %s%s%s", state_dir,
                    ", ".join(done.removed) or "nothing",
                    f"; made {', '.join(done.made)}" if done.made else "",
                    f"; refs {', '.join(done.refs)}" if done.refs else "",
                    extra={"event": "recovered"})
    return done


def sweep_repository(repo: Path) -> list[str]:
    """Remove a repository's crash debris (lock holder only); returns what went.

    For a repository outside a state directory (tests, tools that hold their own
    lock); ``recover`` does this for the device's.
    """
    done = Recovered()
    _sweep_repository(Path(repo), done)
    return done.removed


def sweep_outbox(outbox: Path, device_id: str) -> list[str]:
    """Remove this device's temp files from a stick's outbox (a write cut short)."""
    try:
        fd = os.open(outbox, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        return [str(Path(outbox) / name) for name in sweep_outbox_at(fd, device_id)]
    finally:
        os.close(fd)


def sweep_outbox_at(dir_fd: int, device_id: str) -> list[str]:
    """``sweep_outbox`` in an open folder (the stick's, opened without following links):
    only this device's temp names, each removed relative to ``dir_fd``."""
    try:
        names = os.listdir(dir_fd)
    except OSError:
        return []
    mine = (f".{device_id}.bundle.", f".{device_id}.txt.", f".{device_id}.pub.")
    removed = []
    for name in names:
        if is_temp_name(name) and name.startswith(mine):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(name, dir_fd=dir_fd)
                removed.append(name)
    return removed


def _remove(path: Path, removed: list[str]) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            import shutil  # only when a leftover folder is found: not on a sync's path

            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return
    removed.append(str(path))


def _sweep_state_dir(state_dir: Path, done: Recovered) -> None:
    """Temp files anywhere in the state directory, and repository init folders."""
    try:
        entries = list(os.scandir(state_dir))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.name.startswith(INIT_PREFIX) or _OLD_TEMP.fullmatch(entry.name):
            _remove(Path(entry.path), done.removed)
    for folder, dirs, files in os.walk(state_dir):
        if Path(folder) == state_dir and REPO_NAME in dirs:
            dirs.remove(REPO_NAME)  # swept below, by what git leaves
        for name in files:
            if is_temp_name(name):
                _remove(Path(folder, name), done.removed)


def _sweep_repository(repo: Path, done: Recovered) -> None:
    if not repo.exists():
        return
    if not (repo / "HEAD").is_file():
        # Made by a version that built it in place: safe to drop only if it holds nothing.
        if not any(f for _, _, files in os.walk(repo) for f in files if f != "HEAD"):
            _remove(repo, done.removed)
        return
    for rel in REPO_DIRS:  # a repository that lost fresh, unsynced directories
        path = repo / rel
        if not path.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            fsync_dir(path.parent)
            done.made.append(str(path))
    # git's lock files: a writer's claim, dead with the writer.
    for name in ("HEAD.lock", "config.lock", "packed-refs.lock"):
        _remove(repo / name, done.removed)
    for folder, _, files in os.walk(repo / "refs"):
        for name in files:
            if name.endswith(".lock"):
                _remove(Path(folder, name), done.removed)
    objects = repo / "objects"
    for entry in os.scandir(objects):
        if entry.name.startswith("tmp_pack_") or is_temp_name(entry.name):
            _remove(Path(entry.path), done.removed)
        elif len(entry.name) == 2 and entry.is_dir(follow_symlinks=False):
            for inner in os.scandir(entry.path):  # loose objects and their .lock files
                if inner.name.endswith(".lock") or is_temp_name(inner.name):
                    _remove(Path(inner.path), done.removed)
    pack_dir = objects / "pack"
    for entry in os.scandir(pack_dir):
        name = entry.name
        stale = (name.startswith("tmp") or name.endswith(".lock") or is_temp_name(name)
                 # a promote or a packing cut between moving the pack and its index
                 or (name.endswith(".pack") and not (pack_dir / (name[:-5] + ".idx")).exists()))
        if stale:
            _remove(Path(entry.path), done.removed)
    quarantine = repo / QUARANTINE
    if quarantine.is_dir():
        for entry in os.scandir(quarantine):
            if not _in_use(Path(entry.path)):
                _remove(Path(entry.path), done.removed)


def _in_use(quarantine: Path) -> bool:
    """Whether a live import holds this quarantine's lock (flock: in this process or
    another). Without a lock file, its import died before it took one."""
    import fcntl

    try:
        fd = os.open(quarantine / "lock", os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _sweep_root(root: Path, done: Recovered) -> None:
    """The File kind's temp files under a ``[files]`` root (bounded walk, no links)."""
    seen = 0
    for folder, dirs, files in os.walk(root):
        seen += len(dirs) + len(files)
        for name in files:
            if is_temp_name(name):
                _remove(Path(folder, name), done.removed)
        if seen > MAX_ROOT_ENTRIES:
            log.warning("%s: more than %d entries; stopped looking for temp files",
                        root, MAX_ROOT_ENTRIES, extra={"event": "recovery-bounded"})
            return


def _agree_refs(repo: Path, refs: Iterable[tuple[bytes, str | None]], done: Recovered) -> None:
    """Point each ref where the state file says (the state file is the truth).

    A pass writes the state, then the ref (a new spec), or the ref, then the state (a
    status commit); either can be cut between the two. A ref the state does not know
    (the first status commit, cut before the state was saved) is removed: nothing
    was built on it, and the next pass makes its report again.

    Refs that already agree (every pass but one cut short) are read as plain loose
    files (``history.ref_files``): dulwich loads only when one must move or is not such
    a file.
    """
    from giter_agent.history import ref_files

    refs = list(refs)
    agree = True
    for raw_name, tip in refs:
        try:
            agree = agree and ref_files.read(repo, raw_name) == (tip.encode() if tip else None)
        except ref_files.Unknown:
            agree = False
    if agree:
        return
    from dulwich.object_store import DiskObjectStore
    from dulwich.objects import Commit, ObjectID
    from dulwich.refs import DiskRefsContainer, Ref

    container = DiskRefsContainer(str(repo))
    store: DiskObjectStore | None = None
    try:
        for raw_name, tip in refs:
            name = Ref(raw_name)
            try:
                now: ObjectID | None = container[name]
            except KeyError:
                now = None
            want = ObjectID(tip.encode()) if tip else None
            if now == want:
                continue
            if want is None:
                assert now is not None
                container.remove_if_equals(name, now)
            else:
                if store is None:
                    store = DiskObjectStore(str(repo / "objects"))
                if want not in store:
                    continue  # nothing to point at: the pass reports the missing commit
                if not isinstance(store[want], Commit):
                    continue
                if now is None:
                    container.add_if_new(name, want)
                else:
                    container.set_if_equals(name, now, want)
            directory = repo.joinpath(*name.decode().split("/")).parent
            fsync_dir(directory)
            done.refs.append(f"{name.decode()} set to {tip}" if tip
                             else f"{name.decode()} removed")
    finally:
        if store is not None:
            store.close()
