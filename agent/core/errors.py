"""One tree of typed errors for the whole agent.

Every refusal the agent makes is one of these. Each carries a CamelCase
``reason`` (the condition reason written into status and shown to a technician)
and a one-line message a person can act on. Each also inherits the builtin that
fits, so callers outside the agent can catch ``ValueError`` and friends.
"""

from __future__ import annotations


class GiterError(Exception):
    """Base of every error the agent raises on purpose."""

    reason = "Error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(GiterError, ValueError):
    """The agent or board configuration is missing, malformed or out of range."""

    reason = "InvalidConfig"


class BundleError(GiterError, ValueError):
    """A bundle file is malformed, truncated, corrupt or over a size cap."""

    reason = "InvalidBundle"


class HistoryError(GiterError):
    """The object store refused an import: missing prerequisite, bad ref, lost race."""

    reason = "HistoryRejected"


class TrustError(GiterError):
    """A commit failed verification: unsigned, unknown key, bad signature, rollback."""

    reason = "UntrustedCommit"

    def __init__(self, message: str, *, reason: str | None = None, commit: str | None = None):
        super().__init__(message, reason=reason)
        self.commit = commit


class ResourceError(GiterError, ValueError):
    """A resource document is malformed or fails its kind's schema."""

    reason = "InvalidResource"


class TreeError(GiterError, ValueError):
    """A tree holds an entry outside the allowlist (symlink, submodule, bad name)."""

    reason = "InvalidTree"


class LockedError(GiterError):
    """Another agent process holds the state directory."""

    reason = "Busy"
