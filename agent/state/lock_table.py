"""Is another process syncing? Read from the kernel's lock table, never by taking the lock.

``state.store.state_lock`` makes the state directory single-writer with ``flock``. A
sync started outside the daemon (the USB trigger runs ``giter-agent sync --usb``) holds
that lock for as long as it runs, so the daemon can show ``syncing`` on the LED and the
console by asking who holds it. Probing by locking and unlocking would race a real
sync into failing as busy; ``/proc/locks`` answers without touching the lock.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PROC_LOCKS = Path("/proc/locks")


def lock_holders(state_dir: Path, *, locks: Path = PROC_LOCKS) -> set[int]:
    """Pids holding ``<state_dir>/lock`` (empty when none, or when it cannot be told)."""
    try:
        st = os.stat(Path(state_dir) / "lock")
        table = locks.read_text()
    except OSError:
        return set()
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders = set()
    for row in table.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"; a blocked waiter's row reads
        # "1: -> FLOCK ...", so its second field is not FLOCK and it is skipped.
        parts = row.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == inode:
            with contextlib.suppress(ValueError):
                holders.add(int(parts[4]))
    return holders


def sync_in_progress(state_dir: Path, *, exclude_pid: int | None = None,
                     locks: Path = PROC_LOCKS) -> bool:
    """True while a process other than ``exclude_pid`` (the daemon itself) holds the lock."""
    return bool(lock_holders(state_dir, locks=locks) - {exclude_pid})
