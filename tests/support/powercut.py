"""A power-cut model: a loop-mounted filesystem image that loses what was not fsynced.

The device's whole world (state directory, files root, stick) lives on a small ext4
or btrfs image mounted through a loop device. ``cut()`` copies the image file while
it is mounted: the copy holds exactly what reached the (virtual) disk, which is
what fsync pushed there (the journal commit interval is raised so that nothing else
is written back during a test). The original is then unmounted and the copy mounted
in its place, as a board that lost power and booted again would find its card.

Needs root, ``/dev/loop-control`` and the mkfs tool (e2fsprogs, btrfs-progs);
``unavailable()`` says why not, for a clean skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

MKFS = {"ext4": ["mkfs.ext4", "-q", "-F"], "btrfs": ["mkfs.btrfs", "-q", "-f"]}
# Nothing but fsync reaches the disk during a test: journal commits every 10 minutes.
MOUNT_OPTS = {"ext4": "commit=600", "btrfs": "commit=600"}
SIZE = 256 * 2**20


def unavailable(fs: str) -> str | None:
    """Why this machine cannot run the model for ``fs`` (None: it can)."""
    if os.geteuid() != 0:
        return "mounting a loop device needs root"
    if not Path("/dev/loop-control").exists():
        return "no loop devices here (/dev/loop-control is missing)"
    if shutil.which(MKFS[fs][0]) is None:
        return f"{MKFS[fs][0]} is not installed"
    if fs not in Path("/proc/filesystems").read_text():
        return f"the kernel has no {fs}"
    return None


def _sh(*args: str | os.PathLike) -> None:
    proc = subprocess.run([str(a) for a in args], capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))}: {proc.stderr.decode().strip()}")


class Disk:
    """An image file in ``work``, mounted at ``mountpoint`` while the test runs."""

    def __init__(self, work: Path, mountpoint: Path, fs: str) -> None:
        self.fs = fs
        self.image = work / f"disk.{fs}.img"
        self.copy = work / f"cut.{fs}.img"
        self.mountpoint = mountpoint
        self.mounted = False

    def make(self) -> Disk:
        with open(self.image, "wb") as fh:
            fh.truncate(SIZE)
        _sh(*MKFS[self.fs], self.image)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.mount(self.image)
        return self

    def mount(self, image: Path) -> None:
        _sh("mount", "-o", f"loop,{MOUNT_OPTS[self.fs]}", image, self.mountpoint)
        self.mounted = True

    def umount(self) -> None:
        if self.mounted:
            _sh("umount", self.mountpoint)
            self.mounted = False

    def settle(self) -> None:
        """Everything written so far reaches the disk (the set-up, before a test run)."""
        os.sync()

    def cut(self) -> None:
        """Lose power: keep only what reached the disk, then boot from it."""
        shutil.copyfile(self.image, self.copy)
        self.umount()
        os.replace(self.copy, self.image)
        self.mount(self.image)

    def close(self) -> None:
        self.umount()
        self.image.unlink(missing_ok=True)


def cut_at(case: Any, disk: Disk, n: int | None) -> Any:
    """Power off just before the sync's ``n``-th fsync (None: after it exits), boot
    again and check that the next sync converges: a ``deathtest.Outcome``.

    ``case`` is a ``deathtest.Case`` whose live folder is ``disk``'s mount point. A
    sync that ran to the end must have made all it reported durable: it is checked
    as it is found after the cut, before any other sync.
    """
    from support.deathtest import Outcome

    case.restore()
    disk.settle()
    if n is None:
        proc = case.sync()
    else:
        proc = case.sync(["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=fsync",
                          "-e", f"inject=fsync:signal=KILL:when={n}"])
    disk.cut()
    outcome = Outcome(case.scenario, f"fsync@{disk.fs}", "power-cut", n or 0, proc.returncode)
    if n is None:
        if proc.returncode != 0:
            outcome.problems.append(f"the clean sync exited {proc.returncode}")
        outcome.problems += case.check()  # reported done, so durable: nothing lost
    return case._converge(outcome, "kill")
