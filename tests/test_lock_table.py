"""Who holds the state lock, as the kernel's lock table tells it."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys

from giter_agent.state.lock_table import lock_holders, sync_in_progress
from giter_agent.state.store import state_lock


def test_a_running_sync_is_seen_and_the_probe_never_takes_the_lock(tmp_path):
    with state_lock(tmp_path):
        assert lock_holders(tmp_path) == {os.getpid()}
        assert sync_in_progress(tmp_path)
        # The daemon's own passes do not count as "someone else is syncing".
        assert not sync_in_progress(tmp_path, exclude_pid=os.getpid())
        # Asking left the lock alone: another process still finds it taken.
        probe = subprocess.run(
            [sys.executable, "-c", "import fcntl, os, sys\n"
             f"fd = os.open({str(tmp_path / 'lock')!r}, os.O_RDWR)\n"
             "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
             "except BlockingIOError:\n    sys.exit(3)\n"], check=False)
        assert probe.returncode == 3
    assert lock_holders(tmp_path) == set()
    assert not sync_in_progress(tmp_path)


def test_a_lock_held_by_another_process(tmp_path):
    (tmp_path / "lock").touch()
    child = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys\n"
         f"fd = os.open({str(tmp_path / 'lock')!r}, os.O_RDWR)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\nsys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        assert lock_holders(tmp_path) == {child.pid}
        assert sync_in_progress(tmp_path, exclude_pid=os.getpid())
    finally:
        child.communicate("", timeout=30)
    assert not sync_in_progress(tmp_path)


def test_rows_are_matched_by_device_and_inode(tmp_path):
    lock = tmp_path / "lock"
    lock.touch()
    st = os.stat(lock)
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    table = tmp_path / "locks"
    table.write_text(
        f"1: POSIX  ADVISORY  WRITE 4242 {dev}:{st.st_ino} 0 EOF\n"  # fcntl lock, not ours
        f"2: FLOCK  ADVISORY  WRITE 4242 {dev}:{st.st_ino + 1} 0 EOF\n"  # another file
        f"3: -> FLOCK  ADVISORY  WRITE 4343 {dev}:{st.st_ino} 0 EOF\n")  # a waiter
    assert lock_holders(tmp_path, locks=table) == set()
    with table.open("a") as fh:
        fh.write(f"4: FLOCK  ADVISORY  WRITE 4242 {dev}:{st.st_ino} 0 EOF\n")
    assert lock_holders(tmp_path, locks=table) == {4242}
    assert not sync_in_progress(tmp_path, locks=table, exclude_pid=4242)
    assert lock_holders(tmp_path / "missing", locks=table) == set()
    assert lock_holders(tmp_path, locks=tmp_path / "no-such-table") == set()


def test_flock_from_this_module_is_not_needed_to_read(tmp_path):
    # A lock taken with plain fcntl.flock (not state_lock) is seen just the same.
    fd = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        assert lock_holders(tmp_path) == {os.getpid()}
    finally:
        os.close(fd)
