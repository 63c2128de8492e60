"""Python's cyclic garbage collector, set for how long a process lives.

Most ``giter-agent`` and ``giter-bundle`` processes do one job and exit: a sync from a
stick, a status command, a daemon's pass worker. Python's collector is tuned for
programs that live: it walks the young objects every 700 new ones, and every object
now and then. A job's process makes about 26,000 objects that never become garbage
while it starts (the modules, classes and functions it imports), so those walks cost a
sync of ten new commits about 6 ms, and the collection at exit (over objects the
process's end frees anyway) about 13 ms more: together a seventh of the sync.

``one_job(main)`` runs ``main`` as such a process's job: young objects are walked every
``JOB_THRESHOLD`` new ones instead. The count is of objects made less those freed, and
objects that are not in a reference cycle are freed as soon as they are dropped, so
what piles up between walks is live objects, plus cyclic garbage of at most that many
objects (a few MiB at worst). A sync of new commits then makes no walk at all (one at
20,000 cost it 2 ms), and a longer job still collects its cycles. At exit every object is
frozen (``gc.freeze``), so the interpreter's last collections skip them. Nothing else
of the exit changes: ``atexit`` runs, files are flushed and closed as before. A command
that turns out to live (``giter-agent run``, ``serve-serial``) calls ``long_lived()``
first, which gives it Python's own thresholds back: the daemon's memory is measured
with them (docs/performance.md, "Under 20 MiB").

Only the process's entry points call ``one_job`` (the console scripts, the Debian
launchers, ``python -m``, the pass worker); ``main([...])`` called in a test changes
nothing of the test's process.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

JOB_THRESHOLD = 50_000  # new objects between walks of the young ones; Python's is 700
_DEFAULT = gc.get_threshold()


def one_job(main: Callable[[], int]) -> int:
    """``main()``'s exit code, run as the one job of this process (see the module)."""
    gc.set_threshold(JOB_THRESHOLD, *_DEFAULT[1:])
    try:
        return main()
    finally:
        gc.freeze()


def long_lived() -> None:
    """This process lives on: Python's own collector thresholds again."""
    gc.set_threshold(*_DEFAULT)
