"""One budget for one sync: the time every stage may take and the bytes a hub may send.

A sync makes one ``Budget`` (``limits.time_budget_s``; for a network sync also
``limits.max_bundle_mib`` as ``max_bytes``) and hands the same object to every stage of
every bundle or fetch it tries: the reads from the hub (``transport.network``), the pack
copy and index, the completeness walk, signature verification and the final
materialising reads. Three hostile bundles on one stick therefore share one budget
instead of getting one each, and a hub's trickle of bytes runs out the same clock the
verification of what it sent does. The clock is passed in so tests can drive it;
nothing here sleeps.

Two ways to run out, by who is to blame: a stage that takes too long (``check``) is
``BundleError``, the data's fault; a read that would wait past the end (``wait_s``) or a
peer that sends too much (``receive``) is ``NetworkError``, the hub's.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from giter_agent.core.errors import BundleError, NetworkError


class Budget:
    """A deadline ``budget_s`` seconds after creation on ``clock`` (monotonic by default),
    and at most ``max_bytes`` received from a peer (None: bytes are not counted)."""

    def __init__(self, budget_s: float, clock: Callable[[], float] = time.monotonic, *,
                 max_bytes: int | None = None) -> None:
        self.budget_s = budget_s
        self.max_bytes = max_bytes
        self._clock = clock
        self._end = clock() + budget_s
        self.checks = 0  # how often a stage asked; tests count these
        self.received = 0  # bytes a peer sent, over every connection of the sync

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
        """Seconds left, never below 0."""
        return max(0.0, self._end - self._clock())

    def wait_s(self, peer: str) -> float:
        """How long a read from ``peer`` may still wait: the seconds left, or
        NetworkError(TimeBudgetExceeded) when there are none."""
        left = self._end - self._clock()
        if left <= 0:
            raise NetworkError(f"{peer}: the hub did not finish within the sync's "
                               f"time_budget_s={self.budget_s:g}",
                               reason="TimeBudgetExceeded")
        return left

    def receive(self, n: int, peer: str) -> None:
        """Count ``n`` bytes from ``peer``; NetworkError(TooLarge) past ``max_bytes``."""
        self.received += n
        if self.max_bytes is not None and self.received > self.max_bytes:
            raise NetworkError(f"{peer}: the hub sent more than {self.max_bytes} bytes "
                               "(max_bundle_mib)", reason="TooLarge")
