"""How long to wait before trying the hub again: exponential backoff with jitter.

After the n-th failure in a row the wait is drawn from [c/2, c], where c doubles from
``base_s`` each time up to ``max_s``. The random half matters for a fleet: a thousand
boards that lost the hub in the same minute must not come back to it in the same
second. The wait never drops below half the ceiling, so a flapping link still backs
off. Used by the daemon; the failure count lives in ``state.network``.
"""

from __future__ import annotations

import random

from giter_agent.core.named_tuple import NamedTuple


class Backoff(NamedTuple):
    base_s: float = 5.0
    max_s: float = 3600.0

    def ceiling(self, failures: int) -> float:
        """The longest wait after ``failures`` failures in a row (0 after none)."""
        if failures <= 0:
            return 0.0
        return min(self.max_s, self.base_s * 2.0 ** min(failures - 1, 40))

    def delay(self, failures: int, rng: random.Random) -> float:
        """Seconds to wait after ``failures`` failures in a row (0: none, go now)."""
        ceiling = self.ceiling(failures)
        return ceiling / 2 + rng.uniform(0, ceiling / 2)
