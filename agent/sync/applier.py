"""Applying a verified spec: reconcile it on the device, then commit signed status.

``SpecApplier.apply`` reads the newest accepted spec (or keeps the last good one when
its tree is unusable), runs the level-based reconcile pass (``reconcile.engine``),
computes the ``Stale`` condition, commits one signed status commit when something
changed (``status.documents``), and saves the state. Called by ``sync.agent`` after
every import and for timer passes, and by ``sync.hub`` after a fetch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from giter_agent import __version__
from giter_agent.config.agent_toml import Config
from giter_agent.core.errors import HistoryError, TreeError
from giter_agent.core.log import get_logger
from giter_agent.core.times import rfc3339
from giter_agent.kinds.base import Context, Kind
from giter_agent.reconcile.engine import reconcile
from giter_agent.reconcile.order import Order, spec_order
from giter_agent.spec.resources import SpecSet
from giter_agent.state.store import State, StateStore
from giter_agent.status.documents import StatusDocuments, inputs_digest
from giter_agent.status.report import SyncReport
from giter_agent.sync.spec_cache import CommitFacts, SpecCache

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from giter_agent.history.store import History

log = get_logger("giter.sync")


class SpecApplier:
    """Reconciles the accepted spec and records what the device did, as signed status."""

    def __init__(self, config: Config, state_store: StateStore, ctx: Context,
                 kinds: Mapping[str, Kind], clock: Callable[[], float],
                 device_key: Callable[[], Ed25519PrivateKey]) -> None:
        self.config = config
        self.state_store = state_store
        self.ctx = ctx
        self.kinds = kinds
        self.clock = clock
        self.device_key = device_key
        # What a pass that changes nothing must not do again (the daemon's timer passes):
        # the last spec read, as a commit id and its parsed resources (a commit never
        # changes, so it is parsed once); the status documents as last serialised; and
        # the status commit last made from them, with the spec it observed.
        self._spec: tuple[str, SpecSet, Order] | None = None
        self.spec_cache = SpecCache(state_store.path.parent, config.device_id, config.groups)
        self.documents = StatusDocuments()
        self._status: tuple[str, str | None, dict[str, bytes]] | None = None
        # Before that: the inputs a status tip was found made from (``State.status_of``).
        self._unrendered: tuple[str, str | None, dict[str, Any], dict[str, Any]] | None = None

    def read_spec(self, history: History, commit: str) -> SpecSet:
        """The resources of ``commit`` addressed to this device (``spec.targeting``: its
        folder, the ``fleet/`` selectors its enrolled labels match, its groups), parsed
        once per commit."""
        if self._spec is not None and self._spec[0] == commit:
            return self._spec[1]
        # A new process (a daemon pass worker, a one-shot sync) reads what an earlier
        # one parsed from the same verified commit (``sync.spec_cache``).
        specset = self.spec_cache.load(commit)
        if specset is None:
            specset = self._parse_spec(history, commit)
            self.spec_cache.save(commit, specset)  # with its facts (read by the parse)
        elif self.spec_cache.facts(commit) is None:  # kept without them: add them once
            self.commit_facts(history, commit)
            self.spec_cache.save(commit, specset)
        self._spec = (commit, specset, spec_order(specset))
        return specset

    def _parse_spec(self, history: History, commit: str) -> SpecSet:
        from giter_agent.spec.targeting import read_device_spec

        tree = self._read_commit(history, commit).tree
        return read_device_spec(history.object_store, tree, self.config.device_id,
                                self.config.groups)

    def _read_commit(self, history: History, commit: str) -> Any:
        """``commit`` from the store; its facts are remembered on the way."""
        from giter_agent.history.objects import read_commit
        from giter_agent.trust.trailers import urgent_of

        c = read_commit(history.object_store, commit.encode())
        self.spec_cache.remember(commit, CommitFacts(int(c.commit_time), urgent_of(c.message)))
        return c

    def commit_facts(self, history: History, commit: str) -> CommitFacts:
        """``commit``'s date and ``Giter-Urgent:`` trailer: kept beside its parsed spec
        (``sync.spec_cache``), read from the store when not."""
        facts = self.spec_cache.facts(commit)
        if facts is None:
            self._read_commit(history, commit)
            facts = self.spec_cache.facts(commit)
            assert facts is not None
        return facts

    def artifacts(self, history: History, commit: str) -> Any:
        """The artifacts of ``commit``'s tree, for the kinds of one pass
        (``history.artifacts``), under ``[limits] max_artifact_mib``; opened when a kind
        first reads one (a pass of Files opens no object store)."""
        def make() -> Any:
            from giter_agent.history.artifacts import TreeArtifacts

            return TreeArtifacts(history.object_store,
                                 self._read_commit(history, commit).tree,
                                 max_bytes=self.config.limits.max_artifact_mib * 2**20,
                                 scratch=history.path)

        return _OnFirstUse(make)

    def apply(self, history: History, state: State, report: SyncReport, source: str,
              *, record_sync: bool = True, only: set[str] | None = None) -> None:
        """Reconcile the newest valid spec, commit status if it changed, save the state.

        ``only``: a wakeup pass visits just these resources (``reconcile.engine``)."""
        invalid_spec: str | None = None
        specset: SpecSet | None = None
        if state.accepted:
            try:
                specset = self.read_spec(history, state.accepted)
                state.applied = state.accepted
            except TreeError as exc:
                invalid_spec = f"spec {state.accepted[:12]}: {exc}"
                if state.applied:
                    specset = self.read_spec(history, state.applied)
        if invalid_spec:
            report.outcome, report.reason = "invalid-spec", "InvalidTree"
            report.message = invalid_spec + (
                f"; spec {state.applied[:12]} stays applied" if state.applied else "")
        if specset is not None and state.applied:
            # The spec commit's date and Giter-Urgent: trailer steer maintenance windows.
            facts = self.commit_facts(history, state.applied)
            # Kinds that lay down artifacts read them from this commit's tree alone.
            self.ctx.artifacts = self.artifacts(history, state.applied)
            order = self._spec[2] if self._spec and self._spec[1] is specset else None
            try:
                result = reconcile(specset, self.ctx, self.kinds, state.resources,
                                   state.applied, urgent=facts.urgent,
                                   spec_time=float(facts.time), only=only,
                                   order=order)
            finally:
                self.ctx.artifacts = None
            state.resources = result.records
            report.not_ready = result.not_ready
            report.resources = result.records
        now = self.clock()
        state.conditions = [stale_condition(state, now)]
        if state.conditions[0]["status"] == "True":
            report.stale = state.conditions[0]["message"]
        if record_sync:
            # The last exchange that happened: an offline attempt does not replace it (the
            # network record says it), so the status summary does not flap with the link.
            state.last_sync = {"time": rfc3339(now), "source": source,
                               "outcome": report.outcome, "reason": report.reason,
                               "message": report.message,
                               "bundles": [v._asdict() for v in report.bundles],
                               "notReady": report.not_ready}
        wrote = False
        if state.applied:
            before = state.status_tip
            state.status_tip = self._commit_status(history, state, report, now)
            wrote = state.status_tip != before
            # Every bundle answered "up to date" (a stick already taken) brought nothing.
            nothing_new = bool(report.bundles) and all(
                v.verdict == "up-to-date" for v in report.bundles)
            if wrote or (record_sync and not nothing_new):
                # Only a new status commit or an import adds objects. This process holds
                # the state lock: it alone may merge and delete packs.
                history.consolidate()
        self.state_store.save(state)
        if wrote:
            self._confirm_update()
        self.write_metrics(history, state)
        report.accepted, report.applied = state.accepted, state.applied
        report.status_commit = state.status_tip
        report.network = state.network if self.config.network else None

    def _confirm_update(self) -> None:
        """A status commit is written: an update of the agent on trial in this very
        environment has done what it had to (``state.update_journal``)."""
        from giter_agent.state.agent_env import running_env

        journal = self.ctx.update_journal
        env = running_env()
        if journal is None or env is None:
            return
        try:
            if journal.confirm(env):
                log.info("giter-agent update confirmed: environment %s wrote a status "
                         "commit", env, extra={"event": "agent-update"})
        except OSError as exc:
            log.warning("cannot confirm the agent update: %s", exc,
                        extra={"event": "agent-update", "reason": "WriteFailed"})

    def write_metrics(self, history: History, state: State) -> None:
        """``[metrics] textfile``, when set and changed (``status.metrics``); never fails
        the pass: a file that cannot be written is a warning in the log."""
        path = self.config.metrics_textfile
        if path is None:
            return
        from giter_agent.status.metrics import render, write_if_changed

        try:
            spec_time = (float(self.commit_facts(history, state.applied).time)
                         if state.applied else None)
            write_if_changed(path, render(self.config.device_id, state, spec_time=spec_time))
        except (OSError, KeyError, HistoryError) as exc:
            log.warning("cannot write the metrics file %s: %s", path, exc,
                        extra={"event": "metrics", "reason": "MetricsUnwritable"})

    def _commit_status(self, history: History, state: State, report: SyncReport,
                       now: float) -> str | None:
        summary = {
            "acceptedCommit": state.accepted,
            "appliedCommit": state.applied,
            "expires": state.expires,
            # What the publisher must hear about, and nothing that differs between two
            # syncs of the same stick: a re-sync that changes nothing makes no commit.
            "refused": [b for b in state.last_sync.get("bundles", [])
                        if b["verdict"] == "refused"],
            "invalid": [{"path": r.path, "reason": r.conditions[0]["reason"],
                         "message": r.conditions[0]["message"]}
                        for r in state.resources.values() if r.invalid],
            "notReady": report.not_ready,
            "conditions": state.conditions,
            "agentVersion": __version__,
        }
        assert state.applied is not None  # only an applied spec has status to commit
        digest: str | None = None
        if self._status is None:
            # This process has made no status yet (a pass worker, a one-shot sync): if
            # the state says the tip was made from these very inputs, it holds these
            # documents, and none need serialising (nor PyYAML loading) to know it.
            kept = self._unrendered
            if (kept is not None and kept[:2] == (state.applied, state.status_tip)
                    and kept[2] == state.resources and kept[3] == summary):
                return state.status_tip
            digest = inputs_digest(self.config.device_id, state.applied, state.resources,
                                   summary)
            if (digest is not None and state.status_tip
                    and state.status_of == (state.status_tip, digest)):
                self._unrendered = (state.applied, state.status_tip, dict(state.resources),
                                    copy.deepcopy(summary))
                return state.status_tip
        files = self.documents.files(self.config.device_id, state.resources, summary)
        if (self._status is not None and self._status[:2] == (state.applied, state.status_tip)
                and self._status[2] == files):
            # The very documents the status tip was made of (by this process): the tree
            # and the commit would be the same, so nothing is written or even read.
            return state.status_tip
        tip = self._write_status(history, state, report, now, files)
        self._status = (state.applied, tip, files)
        if digest is None:
            digest = inputs_digest(self.config.device_id, state.applied, state.resources,
                                   summary)
        state.status_of = (tip, digest) if tip and digest else None
        return tip

    def _write_status(self, history: History, state: State, report: SyncReport, now: float,
                      files: dict[str, bytes]) -> str | None:
        from giter_agent.history.objects import read_commit
        from giter_agent.history.tree import replace_files
        from giter_agent.status.documents import make_status_commit

        def sign(commit: Any) -> None:
            # Only a new status commit needs the key (and the signer, and cryptography):
            # a pass whose tree is the tip's makes none.
            from giter_agent.trust.signed_commit import sign_commit

            sign_commit(commit, self.device_key())

        assert state.applied is not None
        spec = state.applied.encode()
        previous = state.status_tip.encode() if state.status_tip else None
        what = {"applied": "applied", "up-to-date": "in sync"}.get(report.outcome,
                                                                    report.outcome)
        ready = len(state.resources) - len(report.not_ready)
        message = (f"status: {what}, {ready}/{len(state.resources)} resources Ready "
                   f"(spec {state.applied[:12]})")
        # The commit's new blobs, trees and the commit itself land as one pack, durable
        # before the ref names it: a few fsyncs per commit, not two per object. This
        # process holds the state lock (the one writer): the pack also takes in the small
        # packs the consolidation after it would merge it with, so it is written once.
        with history.new_objects(merge=True) as store:
            tree = replace_files(store, read_commit(store, spec).tree, files)
            new = make_status_commit(store, spec_commit=spec, previous=previous, tree=tree,
                                     device_id=self.config.device_id, message=message,
                                     sign=sign, now=int(now))
        if new is None:
            return state.status_tip
        history.set_ref(self.config.status_ref, previous, new)
        return new.decode()

    # -- the network -------------------------------------------------------------------


def stale_condition(state: State, now: float) -> dict[str, Any]:
    """The device's ``Stale`` condition: has the accepted spec's ``Expires:`` passed?

    Compared with the device's own clock; the commit's dates play no part.
    """
    expires = datetime.fromisoformat(state.expires) if state.expires else None
    if expires is None:
        status, reason, message = "False", "NoExpiry", "the spec has no Expires: trailer"
    elif expires.timestamp() <= now:
        status, reason = "True", "SpecExpired"
        message = (f"spec {(state.accepted or '')[:12]} expired at {rfc3339(expires.timestamp())}"
                   "; it stays applied until the publisher sends a newer one")
    else:
        status, reason = "False", "SpecCurrent"
        message = f"the spec is current until {rfc3339(expires.timestamp())}"
    since = rfc3339(now)
    for cond in state.conditions:
        if cond.get("type") == "Stale" and cond.get("status") == status:
            since = cond.get("lastTransitionTime", since)
    return {"type": "Stale", "status": status, "reason": reason, "message": message,
            "lastTransitionTime": since}


class _OnFirstUse:
    """An object made by ``make`` when one of its attributes is first read."""

    __slots__ = ("_made", "_make")

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._made: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._made is None:
            self._made = self._make()
        return getattr(self._made, name)
