"""Signature arithmetic on a few threads, outcomes in walk order: the trust rule's pool.

``cryptography`` verifies a signature without holding the GIL (its Rust bindings, and
the cffi ones of the 38.x a Debian bookworm board ships), so several threads can do the
arithmetic of several commits at once. ``check_in_order`` is exactly

    for item in order:
        before_each()
        result = prepare(item)()    # what prepare returns: its last check, "finish"

run another way: ``prepare`` (and ``before_each``) stay on the calling thread, in order,
a window of items at a time; then the window's ``finish`` calls run on up to ``workers``
threads while the calling thread waits. Every ``finish`` is awaited, and what is raised
is what the loop above would have raised first: the first failure in walk order,
whichever thread met it and whatever failed after it. ``prepare`` must not depend on
the ``finish`` of earlier items (the trust rule's does not: a commit's trust comes from
its parents' trees, not from their signatures).

Why windows rather than preparing the next items while the threads check the last
ones: a thread coming back from ``cryptography`` needs the GIL for a few microseconds,
and a busy calling thread gives it up only every ``sys.getswitchinterval()`` (5 ms), so
the checks would crawl; measured, overlapping gained little or nothing over one
thread.

No processes: a board with 512 MiB cannot spare an interpreter per core. Threads
start only for an update long enough to gain from them, and stop before it returns.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

T = TypeVar("T")
R = TypeVar("R")
Finish = Callable[[], R]  # what ``prepare`` returns: the last check, made when called

WINDOW = 256  # items prepared, then checked, at a time: bounds what waits in memory
MIN_ITEMS = 64  # fewer: one thread (starting threads would cost more than they save)
MAX_WORKERS = 4


def default_workers() -> int:
    """Threads for the arithmetic: the cores this process may run on, at most four
    (1: everything on the calling thread)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores))


def _finish_all(chunk: list[Finish[R]]) -> tuple[list[R], BaseException | None]:
    """The chunk's results up to its first failure, and that failure."""
    done: list[R] = []
    for finish in chunk:
        try:
            done.append(finish())
        except Exception as exc:  # re-raised on the calling thread, in walk order
            return done, exc
    return done, None


def check_in_order(order: Sequence[T], prepare: Callable[[T], Finish[R]], *,
                   workers: int, before_each: Callable[[], None] | None = None,
                   window: int = WINDOW) -> list[R]:
    """``[prepare(item)() for item in order]`` (``before_each()`` before each
    ``prepare``), with the calls of what ``prepare`` returns (its ``finish``) on up to
    ``workers`` threads; raises the exception the serial loop would raise first."""
    if workers <= 1 or len(order) < MIN_ITEMS:
        results = []
        for item in order:
            if before_each is not None:
                before_each()
            results.append(prepare(item)())
        return results
    # Imported where used: a device's usual update is a few commits, on one thread.
    from concurrent.futures import ThreadPoolExecutor

    results = []
    with ThreadPoolExecutor(max_workers=workers,
                            thread_name_prefix="giter-signatures") as pool:
        for start in range(0, len(order), window):
            prepared: list[Finish[R]] = []
            failed: Exception | None = None
            for item in order[start:start + window]:
                try:
                    if before_each is not None:
                        before_each()
                    prepared.append(prepare(item))
                except Exception as exc:
                    failed = exc  # raised once the items before it are checked
                    break
            results.extend(_finish_in_order(pool, prepared, workers))
            if failed is not None:
                raise failed
    return results


def _finish_in_order(pool: ThreadPoolExecutor, prepared: list[Finish[R]],
                     workers: int) -> list[R]:
    """Every prepared item's ``finish()``, on the pool, a slice per task; the first failure in
    the items' order is raised (the tasks after it are cancelled)."""
    size = -(-len(prepared) // (2 * workers)) or 1  # two slices per thread: even ends
    tasks: list[Future[tuple[list[R], BaseException | None]]] = [
        pool.submit(_finish_all, prepared[i:i + size]) for i in range(0, len(prepared), size)]
    results: list[R] = []
    try:
        for task in tasks:
            done, failure = task.result()
            results.extend(done)
            if failure is not None:
                raise failure
    finally:
        for task in tasks:
            task.cancel()  # after a failure: what has not started never will
    return results
