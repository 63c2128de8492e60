"""The publisher's errors, declared in the project's one error tree (``core.errors``).

Every command turns these into one line on stderr: ``giter-bundle: <Reason>: <message>``.
A ``UsageError`` (wrong folder, missing key, bad argument) exits 2, as in giter-agent;
anything else the toolkit refuses exits 1.
"""

from __future__ import annotations

from giter_agent.core.errors import PublisherError
from giter_agent.core.errors import PublisherUsageError as UsageError

__all__ = ["PublisherError", "UsageError"]
