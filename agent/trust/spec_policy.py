"""The device's import-gate policy for spec bundles and fetches: ``SpecPolicy``.

A module of its own, light to import: the gate asks a policy first whether the source
brings anything new (``trust.gate``, steps 0 and 2), and a sync that brings nothing new
(the stick the device already took) must not load the verifier, the trust files and
``cryptography`` to hear it. ``verify`` loads the spec-commit rule
(``trust.spec_rule.verify_update``), and the trust root is loaded on first use when it
is given as a loader.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from giter_agent.core.errors import BundleError, Reason, TrustError
from giter_agent.trust.gate import Admitted, NothingNew

if TYPE_CHECKING:
    from giter_agent.core.budget import Budget
    from giter_agent.history.store import Quarantine
    from giter_agent.trust.trust_files import TrustRoot


class SpecPolicy:
    """The device's import-gate policy (``trust.gate``): the spec-commit rule.

    ``ref`` must be in the quarantine (NoSpecBranch, unusable, otherwise); its tip must
    be new (the accepted tip again is "up to date") and pass ``verify_update`` from the
    accepted tip. ``on_accepted_line(id)`` says whether a commit the device holds is on
    its accepted line (not merely in the store: a sync cut between promote and the state
    save leaves commits there the state never accepted, and they are checked again, in
    full, as new). With ``older_is_nothing_new`` (bundle files), a tip the device already
    holds (``Rollback``) is yesterday's stick: nothing new, not an attack. A tip that does
    not descend (a fork) stays refused, and so does a hub that rewinds.
    """

    def __init__(self, root: TrustRoot | Callable[[], TrustRoot], name: str, *, branch: str,
                 max_commits: int, on_accepted_line: Callable[[bytes], bool],
                 budget: Budget | None = None, older_is_nothing_new: bool = False) -> None:
        self._root = root
        self.name = name
        self.branch = branch
        self.max_commits = max_commits
        self.on_accepted_line = on_accepted_line
        self.budget = budget
        self.older_is_nothing_new = older_is_nothing_new

    def tip(self, q: Quarantine, ref: bytes, old: bytes | None) -> bytes:
        tip: bytes | None = q.refs.get(ref)
        if tip is None:
            raise BundleError(f"{self.name} has no {ref.decode()}", reason=Reason.NoSpecBranch)
        if tip == old:
            raise self.nothing_new(tip)
        return tip

    def nothing_new(self, tip: bytes) -> NothingNew:
        return NothingNew("UpToDate", f"spec {tip.decode()[:12]} is already accepted", tip)

    @property
    def root(self) -> TrustRoot:
        """The trust root, loaded on first use when it was given as a loader."""
        if callable(self._root):
            self._root = self._root()
        return self._root

    def verify(self, q: Quarantine, ref: bytes, old: bytes | None, tip: bytes) -> Admitted:
        from giter_agent.trust.spec_rule import verify_update

        def held(sha: bytes) -> bool:
            return q.held(sha) and old is not None and self.on_accepted_line(sha)

        try:
            verified = verify_update(q.object_store, old, tip, self.root, held=held,
                                     branch=self.branch, max_commits=self.max_commits,
                                     budget=self.budget)
        except TrustError as exc:
            if exc.reason == "Rollback" and self.older_is_nothing_new:
                raise NothingNew("OlderSpec", f"nothing new: it holds an older spec ({exc})",
                                 tip) from None
            raise
        return Admitted(len(verified.commits), verified.expires)
