"""How long a sync pass may honestly take: the bound the daemon's watchdog trusts.

Kept apart from the sync itself so the daemon can know it without loading the sync.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from giter_agent.config.agent_toml import Config

# Tries at pushing status/<device> when the hub's copy moved under us (fetch in between).
PUSH_ATTEMPTS = 3


def max_pass_s(config: Config) -> float:
    """The time budget of a sync, plus a minute, plus every connect and read the hub
    exchange may wait on (a fetch and each push attempt, each with a retry)."""
    net = config.network
    return config.limits.time_budget_s + 60.0 + (
        2 * (PUSH_ATTEMPTS + 1) * (net.connect_timeout_s + net.read_timeout_s)
        if net else 0.0)
