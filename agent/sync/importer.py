"""Spec imports for every transport, through the one import gate (``trust.gate``).

A stick's bundle files and a fetch from the hub both arrive here as a checked
quarantine (``history.store``); the gate, with the spec-commit rule
(``trust.spec_rule.SpecPolicy``), verifies every new commit against the trust in force,
promotes the objects and moves the accepted tip: state file first (durable), then the
ref. A refusal leaves everything as it was and comes back as a ``BundleVerdict`` saying
why. Called by ``sync.agent`` and ``sync.hub``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from giter_agent.config.agent_toml import Config
from giter_agent.core.durable import shown
from giter_agent.core.errors import Reason
from giter_agent.core.log import get_logger
from giter_agent.state.store import State, StateStore
from giter_agent.status.report import BundleVerdict, SyncReport

if TYPE_CHECKING:
    from giter_agent.core.budget import Budget
    from giter_agent.history.store import History
    from giter_agent.trust.gate import Admitted
    from giter_agent.trust.trust_files import TrustRoot

    # The trust root, or what loads it: a sync that brings nothing new never needs it.
    RootOrLoader = TrustRoot | Callable[[], TrustRoot]

log = get_logger("giter.sync")


class SpecImporter:
    """Takes spec bundles (or a fetch) into the repository, verified, or says why not."""

    def __init__(self, config: Config, state_store: StateStore) -> None:
        self.config = config
        self.state_store = state_store

    def import_bundles(self, history: History, state: State, root: RootOrLoader,
                       bundles: list[Path], budget: Budget) -> list[BundleVerdict]:
        """Import every bundle of a stick (in any order): one verdict each.

        ``root``: the trust root, or what loads it (once) when a bundle brings something
        to verify: a stick the device already took is answered without it.

        ``budget`` is the sync's one time budget: every bundle's every stage checks it.
        """
        pending = sorted(bundles)
        done: list[BundleVerdict] = []
        # A stick may carry incremental bundles that build on each other: retry the ones
        # whose prerequisites were missing until a pass makes no progress.
        while pending:
            progressed = False
            waiting: list[tuple[Path, BundleVerdict]] = []
            for path in pending:
                verdict = self._import_file(history, state, root, path, budget)
                if verdict.reason == Reason.MissingPrerequisite:
                    waiting.append((path, verdict))
                    continue
                progressed = progressed or verdict.verdict == "applied"
                done.append(verdict)
            if not progressed or not waiting:
                done.extend(v for _, v in waiting)
                break
            pending = [p for p, _ in waiting]
        return done

    def _import_file(self, history: History, state: State, root: RootOrLoader, path: Path,
                     budget: Budget) -> BundleVerdict:
        def announced() -> dict[bytes, bytes]:
            budget.check()  # every bundle's every stage spends the sync's one budget
            return history.announced_refs(path)

        # A file name comes from a stick: shown escaped (not UTF-8, a newline) everywhere.
        return self.import_one(history, state, root, shown(path.name),
                               lambda: history.quarantine(path, budget), budget,
                               older_is_nothing_new=True, announced=announced)

    def import_one(self, history: History, state: State, root: RootOrLoader, name: str,
                   open_quarantine: Callable[[], contextlib.AbstractContextManager[Any]],
                   budget: Budget, *, older_is_nothing_new: bool = False,
                   announced: Callable[[], dict[bytes, bytes]] | None = None
                   ) -> BundleVerdict:
        """The one import path for every transport: the import gate (``trust.gate``) with
        the spec-commit rule (``trust.spec_rule.SpecPolicy``).

        ``open_quarantine()`` yields a checked ``Quarantine`` (of a bundle file or of a
        fetch); from there on a bundle and a fetch are treated exactly alike, but for
        ``older_is_nothing_new`` (bundle files): a tip that is an ancestor of the
        accepted spec (``Rollback``) is yesterday's stick, not an attack; it brings
        nothing new and the device keeps what it has. The state file is saved (durable)
        before the ref moves and before anything acts on the new spec. ``announced``: the
        refs a bundle file's header names, so that the stick the device already took is
        answered from its header (``trust.gate``, step 0).
        """
        from giter_agent.trust.gate import admit
        from giter_agent.trust.spec_policy import SpecPolicy

        accepted = state.accepted.encode() if state.accepted else None
        policy = SpecPolicy(root, name, branch=self.config.branch,
                            max_commits=self.config.limits.max_commits,
                            on_accepted_line=lambda sha: accepted is not None
                            and history.is_ancestor(sha, accepted),
                            budget=budget, older_is_nothing_new=older_is_nothing_new)

        def save_state(tip: bytes, admitted: Admitted) -> None:
            state.accepted = tip.decode()
            state.expires = admitted.expires.isoformat() if admitted.expires else None
            self.state_store.save(state)  # durable before anything acts on the new spec

        # Reading a bundle maps its own errors (UnreadableBundle); any other OSError is
        # this device's disk refusing a write, and ends the pass (Agent._locked). A
        # NetworkError (the hub, not the data) goes up to be reported as offline.
        verdict = admit(history, self.config.branch_ref, accepted, open_quarantine, policy,
                        before_ref_moves=save_state, announced=announced)
        if verdict.outcome == "accepted":
            n = verdict.commits
            log.info("%s: accepted spec %s (%d new commit%s verified)",
                     name, state.accepted, n, "" if n == 1 else "s",
                     extra={"event": "accepted", "spec": state.accepted})
            return BundleVerdict(name, "applied", "Verified",
                                 f"{n} new commit{'' if n == 1 else 's'} verified, "
                                 f"spec {(state.accepted or '')[:12]}")
        if verdict.outcome == "up-to-date":
            if verdict.reason == "OlderSpec":
                log.info("%s: %s", name, verdict.message,
                         extra={"event": "up-to-date", "reason": "OlderSpec"})
            return BundleVerdict(name, "up-to-date", verdict.reason, verdict.message)
        # Only a bundle that cannot be used at all is "unusable"; one that was read and
        # failed a check is "refused", and a refusal is always reported loudly.
        log.warning("%s %s: %s: %s", name, verdict.outcome, verdict.reason, verdict.message,
                    extra={"event": verdict.outcome, "reason": verdict.reason,
                           "commit": verdict.commit})
        return BundleVerdict(name, verdict.outcome, verdict.reason, shown(verdict.message))


def summarise(verdicts: list[BundleVerdict], state: State) -> SyncReport:
    """The pass's outcome from its bundles' verdicts (a refusal is always reported)."""
    refused = [v for v in verdicts if v.verdict == "refused"]
    if refused:
        v = refused[0]
        return SyncReport("refused", v.reason, f"{v.file}: {v.message}", bundles=verdicts)
    if any(v.verdict == "applied" for v in verdicts):
        return SyncReport("applied", "Verified", f"spec {(state.accepted or '')[:12]} accepted",
                          bundles=verdicts)
    if any(v.verdict == "up-to-date" for v in verdicts):
        older = all(v.reason == "OlderSpec" for v in verdicts if v.verdict == "up-to-date")
        return SyncReport("up-to-date", "UpToDate",
                          f"{'nothing new: ' if older else ''}spec "
                          f"{(state.accepted or '')[:12]} already applied", bundles=verdicts)
    if verdicts:
        v = verdicts[0]
        return SyncReport("unusable", v.reason, f"{v.file}: {v.message}", bundles=verdicts)
    return SyncReport("no-bundles", "NoBundles", "no bundle to import", bundles=verdicts)
