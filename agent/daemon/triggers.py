"""What wakes the daemon: each trigger says when it is next due and which file
descriptors to sleep on, and turns a wake-up into jobs.

The daemon (``daemon.loop``) blocks in ``poll()`` on every trigger's descriptors
until the earliest ``next_due``; nothing here spins. A trigger is any object with:

- ``name``: for logs;
- ``fds() -> list[tuple[int, int]]``: (descriptor, poll event mask) pairs to wait on;
- ``next_due(now) -> float | None``: the ``time.monotonic()`` time it wants to run at,
  or None for "only when a descriptor is ready";
- ``fire(now, ready) -> list[Job]``: called when due (``ready`` empty) or when one of
  its descriptors (``ready``, a set) is ready; a ``Job`` (``daemon.jobs``) with ``run``
  set brings its own pass;
- ``finished(job, report, now)``: called after a job it asked for ran (``report`` is
  the ``SyncReport``, or None when the pass failed).

Built in: the sync interval with backoff (``SyncTimer``), a USB stick appearing under
``[usb] roots`` (``UsbWatch``), the reconcile deadlines resources asked for
(``WakeupTimer``), and another process changing the state file (``StateWatch``). A
serial peer adds itself the same way.
"""

from __future__ import annotations

import os
import random
import re
import select
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from giter_agent.core.log import get_logger
from giter_agent.daemon import inotify
from giter_agent.daemon.backoff import Backoff
from giter_agent.daemon.jobs import NETWORK, PRIORITY, RECONCILE, USB, WAKEUP, Job

__all__ = [
    "NETWORK",
    "PRIORITY",
    "RECONCILE",
    "USB",
    "WAKEUP",
    "Job",
    "StateWatch",
    "SyncTimer",
    "UsbWatch",
    "WakeupTimer",
    "identity",
    "mount_sources",
]

log = get_logger("giter.daemon")


class SyncTimer:
    """A network sync at start, then every ``interval()`` seconds; after failures, the
    backoff's delay instead (jittered, growing), until one succeeds.

    ``interval`` is a callable so the effective setting (config, or the Agent kind's
    remote override) is read afresh each time.
    """

    name = "sync-interval"

    def __init__(self, interval: Callable[[], float], backoff: Backoff, rng: random.Random,
                 failures: int = 0, now: float | None = None) -> None:
        self.interval = interval
        self.backoff = backoff
        self.rng = rng
        self.failures = failures
        start = time.monotonic() if now is None else now
        # Resuming after a restart mid-outage keeps backing off instead of hammering.
        self.due: float | None = start + backoff.delay(failures, rng)

    def fds(self) -> list[tuple[int, int]]:
        return []

    def next_due(self, now: float) -> float | None:
        return self.due

    def poke(self, now: float) -> None:
        """Sync as soon as possible (SIGUSR1, an operator's request)."""
        self.due = now

    def fire(self, now: float, ready: set[int]) -> list[Job]:
        self.due = None  # until this job finishes
        return [Job(NETWORK, reason="interval" if not self.failures else "retry")]

    def finished(self, job: Job, report: Any, now: float) -> None:
        net = report.network if report is not None else None
        if report is None:
            self.failures += 1
        else:
            self.failures = net.failures if net and net.state != "online" else 0
        if self.failures:
            wait = self.backoff.delay(self.failures, self.rng)
            log.info("next try at the hub in %.0f s (%d failure%s in a row)", wait,
                     self.failures, "" if self.failures == 1 else "s",
                     extra={"event": "backoff"})
        else:
            wait = self.interval()
        self.due = now + wait


class WakeupTimer:
    """A reconcile pass when a resource asked for one (a sensor sample, a retry).

    ``wakeup()`` is ``Agent.next_wakeup`` (wall-clock time); it is read only between
    passes, in ``refresh``.
    """

    name = "wakeups"

    def __init__(self, wakeup: Callable[[], float | None],
                 wall: Callable[[], float] = time.time) -> None:
        self.wakeup = wakeup
        self.wall = wall
        self.due: float | None = None

    def refresh(self, now: float) -> None:
        at = self.wakeup()
        self.due = None if at is None else now + max(0.0, at - self.wall())

    def fds(self) -> list[tuple[int, int]]:
        return []

    def next_due(self, now: float) -> float | None:
        return self.due

    def fire(self, now: float, ready: set[int]) -> list[Job]:
        self.due = None
        return [Job(RECONCILE, reason=WAKEUP)]

    def finished(self, job: Job, report: Any, now: float) -> None:
        """Nothing: the daemon refreshes every wakeup timer after every pass."""


class UsbWatch:
    """A sync when a stick (a folder holding ``giter/inbox``) appears under a root.

    Wakes on inotify events in each root (a folder made or moved in, e.g. an
    automounter's mount point) and on changes of the mount table (``poll`` on
    ``/proc/self/mountinfo`` reports them as POLLPRI: a stick mounted right on a root
    makes no inotify event). Because a mount point appears before its mount is done,
    a scan follows ``settle_s`` after the last event, and while a new folder still has
    no ``giter/inbox`` it is looked at again every ``settle_s`` for ``patience_s``:
    a short, bounded burst right after activity, never a steady poll.

    A stick is synced once per appearance; taking it out and putting it back syncs it
    again. Sticks already present at start are synced.

    When a stick goes away, ``say`` (the daemon's: the serial console) gets one line:
    ``SAFE TO REMOVE`` if it was a mount whose block device is still there (it was
    unmounted, so written back: ``giter-usb eject``), or that it was pulled out before
    it was unmounted (the device is gone: plug it in again to resync).
    """

    name = "usb"

    def __init__(self, roots: Iterable[Path], settle_s: float = 0.5,
                 patience_s: float = 15.0, mountinfo: str = "/proc/self/mountinfo",
                 say: Callable[[str], None] | None = None,
                 sys_block: Path = Path("/sys/class/block")) -> None:
        self.roots = [Path(r) for r in roots]
        self.say = say
        self.mountinfo = mountinfo
        self.sys_block = sys_block
        self._sources: dict[str, str] = {}  # stick path -> its block device, when a mount
        self.settle_s = settle_s
        self.patience_s = patience_s
        self._inotify = inotify.Inotify()
        self._watches: dict[Path, int] = {}
        try:
            self._mounts: int | None = os.open(mountinfo, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._mounts = None  # not Linux /proc: inotify alone
        self._seen: dict[str, tuple[int, int]] = {}  # stick path -> inbox (dev, ino)
        self._due: float | None = time.monotonic()  # scan at start
        self._until = 0.0  # look again every settle_s until then (something is pending)
        self._watch_roots()

    def _watch_roots(self) -> None:
        mask = (inotify.IN_CREATE | inotify.IN_MOVED_TO | inotify.IN_DELETE
                | inotify.IN_MOVED_FROM | inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF
                | inotify.IN_ONLYDIR)
        for root in self.roots:
            if root in self._watches:
                continue
            try:
                self._watches[root] = self._inotify.add_watch(root, mask)
            except OSError as exc:
                # Watched again when the mount table changes (a root is often a mount).
                log.debug("cannot watch USB root %s yet: %s", root, exc.strerror)

    def fds(self) -> list[tuple[int, int]]:
        fds = [(self._inotify.fileno(), select.POLLIN)]
        if self._mounts is not None:
            fds.append((self._mounts, select.POLLPRI))
        return fds

    def next_due(self, now: float) -> float | None:
        return self._due

    def fire(self, now: float, ready: set[int]) -> list[Job]:
        if ready:
            events = self._inotify.read() if self._inotify.fileno() in ready else []
            for ev in events:
                if ev.mask & (inotify.IN_IGNORED | inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF):
                    self._watches = {r: w for r, w in self._watches.items() if w != ev.wd}
            self._watch_roots()
            self._due = now + self.settle_s
            self._until = now + self.patience_s
            return []
        if self._due is None or now < self._due:
            return []
        jobs, pending = self._scan()
        self._due = now + self.settle_s if pending and now < self._until else None
        return jobs

    def _scan(self) -> tuple[list[Job], bool]:
        """Jobs for sticks that appeared; whether a new folder may still become one."""
        present: dict[str, tuple[int, int]] = {}
        pending = False
        for root in self.roots:
            candidates = [root]
            try:
                candidates += sorted(p for p in root.iterdir() if p.is_dir())
            except OSError:
                continue
            for folder in candidates:
                inbox = folder / "giter" / "inbox"
                try:
                    st = inbox.stat()
                except OSError:
                    pending = pending or folder != root
                    continue
                present[str(folder)] = (st.st_dev, st.st_ino)
        jobs = [Job(USB, path, reason="stick appeared") for path, ident in present.items()
                if self._seen.get(path) != ident]
        for job in jobs:
            log.info("USB stick at %s", job.arg, extra={"event": "usb-stick"})
        if jobs:
            mounts = mount_sources(self.mountinfo)
            for job in jobs:
                source = mounts.get(job.arg or "")
                if source is not None:
                    self._sources[job.arg or ""] = source
                else:
                    self._sources.pop(job.arg or "", None)
        for gone in sorted(set(self._seen) - set(present)):
            self._gone(gone)
        self._seen = present
        return jobs, pending

    def _gone(self, path: str) -> None:
        source = self._sources.pop(path, None)
        name = Path(path).name
        if source is None or not source.startswith("/dev/"):
            line = f"USB stick {name}: gone"
        elif (self.sys_block / Path(source).name).exists():
            line = f"USB stick {name}: written back and unmounted: SAFE TO REMOVE"
        else:
            line = (f"USB stick {name}: pulled out before it was unmounted: "
                    "plug it in again to resync")
        log.info("%s", line, extra={"event": "usb-gone"})
        if self.say is not None:
            self.say(line)

    def finished(self, job: Job, report: Any, now: float) -> None:
        """Nothing: a stick is synced once per appearance, whatever the outcome."""

    def close(self) -> None:
        self._inotify.close()
        if self._mounts is not None:
            os.close(self._mounts)
            self._mounts = None


class StateWatch:
    """A reconcile pass when another process (a manual ``giter-agent sync``) replaced
    the state file between the daemon's passes, so outputs this daemon drives follow
    the newly applied spec at once.

    ``own()`` is the state file's identity as the daemon's last pass left it, and
    ``busy()`` tells whether a pass is running: the daemon's own passes write the file
    too, so it is compared only once they are done.
    """

    name = "state-file"
    FILE = "state.msgpack"

    def __init__(self, state_dir: Path, own: Callable[[], tuple[int, int] | None],
                 busy: Callable[[], bool]) -> None:
        self.path = Path(state_dir) / self.FILE
        self.own = own
        self.busy = busy
        self._changed = False
        self._inotify = inotify.Inotify()
        self._inotify.add_watch(state_dir, inotify.IN_MOVED_TO | inotify.IN_CLOSE_WRITE)

    def fds(self) -> list[tuple[int, int]]:
        return [(self._inotify.fileno(), select.POLLIN)]

    def next_due(self, now: float) -> float | None:
        return now if self._changed and not self.busy() else None

    def fire(self, now: float, ready: set[int]) -> list[Job]:
        if ready:
            if any(ev.name == self.FILE for ev in self._inotify.read()):
                self._changed = True
            return []
        self._changed = False
        if identity(self.path) == self.own():
            return []  # our own pass wrote it
        log.info("the state file was changed by another giter-agent; reconciling",
                 extra={"event": "state-changed"})
        return [Job(RECONCILE, reason="state changed")]

    def finished(self, job: Job, report: Any, now: float) -> None:
        """Nothing to schedule."""

    def close(self) -> None:
        self._inotify.close()


def mount_sources(mountinfo: str) -> dict[str, str]:
    """Mount point -> mounted source (``/dev/sda1``), from a ``/proc/*/mountinfo`` file."""
    try:
        text = Path(mountinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    sources: dict[str, str] = {}
    for row in text.splitlines():
        left, sep, right = row.partition(" - ")
        fields, tail = left.split(), right.split()
        if sep and len(fields) >= 5 and len(tail) >= 2:
            # Spaces, tabs and backslashes in a mount point are escaped as \ooo.
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            sources[point] = tail[1]
    return sources


def identity(path: Path) -> tuple[int, int] | None:
    """(inode, mtime) of a file replaced atomically: a new write, a new identity."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns)
