"""The import gate: quarantine, verify, promote, compare-and-swap; one for every importer.

The device takes spec bundles and fetches through it (``sync.importer``, with
``trust.spec_rule.SpecPolicy``); the publisher takes devices' status bundles through it
(``giter-bundle import``, with ``trust.status_rule.StatusPolicy``). The steps, in order:

0. ``announced()``, when the caller has it (a bundle file's header), names the refs the
   source offers before any object is read: when it offers ``old`` itself for ``ref``,
   the verdict is up-to-date at once (``policy.nothing_new``), and nothing is read,
   written or fsynced. Anything else (another tip, no such ref, a header that cannot be
   read) goes the whole way, which says what is wrong with it.
1. ``open_quarantine()`` yields a checked ``history.store.Quarantine`` (of a bundle file
   or of a fetch): nothing has reached the object store yet.
2. ``policy.tip`` names the commit the bundle offers for ``ref`` (or says the bundle
   brings nothing new, or refuses its refs).
3. ``policy.verify`` checks every commit from the ref's expected old tip to that one by
   the policy's rule (the spec-commit rule, the status-commit ownership rule).
4. ``promote([tip])``: only what the tip needs reaches the store.
5. ``before_ref_moves`` (the device saves its state file there, durably), then the ref
   moves from ``old`` to the tip by compare-and-swap.

The outcome is one ``GateVerdict``: ``accepted``, ``up-to-date``, ``refused`` (the bundle
was read and failed a check) or ``unusable`` (it cannot be used at all: a missing
prerequisite, an unreadable file, no such ref). A refusal changes nothing. The callers
only phrase the verdict for their users.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from giter_agent.core.errors import (
    BundleError,
    GiterError,
    HistoryError,
    MissingPrerequisite,
    Reason,
    TrustError,
    UnreadableBundle,
)
from giter_agent.core.named_tuple import NamedTuple

if TYPE_CHECKING:
    from giter_agent.history.store import History, Quarantine

Outcome = Literal["accepted", "up-to-date", "refused", "unusable"]


class GateVerdict(NamedTuple):
    """What the gate made of one bundle or fetch."""

    outcome: Outcome
    reason: str  # a ``Reason`` (or the policy's word for nothing new: UpToDate, OlderSpec)
    message: str = ""  # why, for a refusal or nothing new; callers phrase an acceptance
    tip: bytes | None = None  # accepted: the ref's new value; up-to-date: what was offered
    commits: int = 0  # accepted: how many new commits were verified
    expires: datetime | None = None  # accepted: the new tip's Expires: (spec policy)
    commit: str | None = None  # refused: the commit the refusal names, when there is one


class Admitted(NamedTuple):
    """What a policy's ``verify`` found: every new commit passed."""

    commits: int
    expires: datetime | None = None


class NothingNew(Exception):
    """A policy's answer for a bundle that brings nothing beyond what the ref holds."""

    def __init__(self, reason: str, message: str, tip: bytes | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.tip = tip


class GatePolicy(Protocol):
    """The rule a gate applies: which tip a quarantine offers, and whether it may come in."""

    def tip(self, q: Quarantine, ref: bytes, old: bytes | None) -> bytes:
        """The commit offered for ``ref``; NothingNew, or a GiterError to refuse."""
        ...

    def verify(self, q: Quarantine, ref: bytes, old: bytes | None, tip: bytes) -> Admitted:
        """Check every commit from ``old`` to ``tip``; NothingNew, or a GiterError."""
        ...

    def nothing_new(self, tip: bytes) -> NothingNew:
        """What the policy says of a source that offers the ref's own value ``tip``."""
        ...


def refusal(exc: GiterError) -> GateVerdict:
    """The verdict for an error raised while reading or checking a bundle."""
    unusable = (isinstance(exc, MissingPrerequisite | UnreadableBundle)
                or exc.reason == Reason.NoSpecBranch)
    return GateVerdict("unusable" if unusable else "refused", exc.reason, str(exc),
                       commit=getattr(exc, "commit", None))


def admit(history: History, ref: bytes, old: bytes | None,
          open_quarantine: Callable[[], contextlib.AbstractContextManager[Any]],
          policy: GatePolicy, *,
          before_ref_moves: Callable[[bytes, Admitted], None] | None = None,
          announced: Callable[[], dict[bytes, bytes]] | None = None) -> GateVerdict:
    """Take what ``open_quarantine()`` yields for ``ref`` in, if ``policy`` admits it.

    ``old`` is the value ``ref`` must still hold (None: it must not exist) when it moves.
    Errors of the bundle (BundleError, HistoryError, TrustError) become a refused or
    unusable verdict; anything else (the local disk refusing a write, a network error)
    goes up to the caller, and so does whatever ``before_ref_moves`` raises.
    ``announced``: the refs the source names before any object is read (step 0 above).
    """
    if announced is not None and old is not None:
        try:
            offered = announced().get(ref)
        except (GiterError, OSError):
            offered = None  # the whole way says what is wrong with it
        if offered == old:
            news = policy.nothing_new(old)
            return GateVerdict("up-to-date", news.reason, str(news), old)
    try:
        with open_quarantine() as q:
            tip = policy.tip(q, ref, old)
            admitted = policy.verify(q, ref, old, tip)
            q.promote([tip])  # what the tip needs: a courier's junk stays behind
    except NothingNew as news:
        return GateVerdict("up-to-date", news.reason, str(news), news.tip)
    except (BundleError, HistoryError, TrustError) as exc:
        return refusal(exc)
    if before_ref_moves is not None:
        before_ref_moves(tip, admitted)
    try:
        history.set_ref(ref, old, tip)
    except HistoryError as exc:
        return refusal(exc)
    return GateVerdict("accepted", "Verified", "", tip, admitted.commits, admitted.expires)
