"""Waiting for what a background thread or process does, by its effect, never by a sleep
of a guessed length (the timeout only ends a test that would otherwise hang)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], timeout: float = 120.0) -> None:
    """Return once ``predicate()`` is true; fail the test after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")
