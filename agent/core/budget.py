"""One time budget for one sync: every stage that can be made slow by its input checks it.

A sync makes one ``Budget`` (``limits.time_budget_s``) and hands the same object to every
stage of every bundle it tries: the pack copy and index, the completeness walk, signature
verification and the final materialising reads. Three hostile bundles on one stick
therefore share one budget instead of getting one each. The clock is passed in so tests
can drive it; nothing here sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from giter_agent.core.errors import BundleError


class Budget:
    """A deadline ``budget_s`` seconds after creation on ``clock`` (monotonic by default)."""

    def __init__(self, budget_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget_s = budget_s
        self._clock = clock
        self._end = clock() + budget_s
        self.checks = 0  # how often a stage asked; tests count these

    def check(self) -> None:
        """Raise BundleError(TimeBudgetExceeded) once the budget is spent."""
        self.checks += 1
        if self._clock() > self._end:
            raise BundleError(f"sync took longer than time_budget_s={self.budget_s:g}",
                              reason="TimeBudgetExceeded")

    def progress(self, _message: bytes | str = b"") -> None:
        """The shape of dulwich's progress callback (called per object): a check."""
        self.check()

    def remaining(self) -> float:
        return max(0.0, self._end - self._clock())
