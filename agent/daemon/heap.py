"""Hand the memory a pass freed back to the system, so the idle daemon stays flat.

Between passes the daemon frees what a pass used (the worker's answer, the state file
it read, the log lines), but the C allocator keeps freed pages of its heaps for later,
and a thread's heap (the pass thread's, the blink threads') is trimmed only when its
top is free: tens of KiB more every hundred passes, although no object outlived its
pass (``tests/test_daemon_worker.py`` counts them). After each pass ``release``
collects cyclic garbage at once (instead of at some later allocation) and asks glibc's
``malloc_trim(0)`` to return the free pages of every heap. Elsewhere (musl, macOS)
there is no such call and it only collects. Python's own small-object arenas are not
the C heap's: what they keep is measured in docs/performance.md ("Under 20 MiB").
"""

from __future__ import annotations

import gc
from collections.abc import Callable

_trim: Callable[[int], int] | None = None
_looked = False


def _malloc_trim() -> Callable[[int], int] | None:
    global _trim, _looked
    if not _looked:
        _looked = True
        try:
            import ctypes

            trim = ctypes.CDLL(None).malloc_trim
            trim.argtypes = [ctypes.c_size_t]
            trim.restype = ctypes.c_int
            _trim = trim
        except (OSError, AttributeError):  # not glibc
            _trim = None
    return _trim


def release() -> None:
    """Collect cyclic garbage, then give free heap pages back (glibc)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
