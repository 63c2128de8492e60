"""Typed errors of the publisher's toolkit, under the agent's one error tree.

Every command turns these into one line on stderr: ``giter-bundle: <Reason>: <message>``.
A ``UsageError`` (wrong folder, missing key, bad argument) exits 2; anything else the
toolkit refuses exits 1.
"""

from __future__ import annotations

from giter_agent.core.errors import GiterError


class PublisherError(GiterError):
    """The toolkit refused to do something: the message says what and why."""

    reason = "Refused"


class UsageError(PublisherError, ValueError):
    """The command cannot start: not an exchange repository, no signing key, bad input."""

    reason = "UsageError"
