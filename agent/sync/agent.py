"""One sync pass: import bundles, verify, reconcile, write status — the layers joined.

This is the only place the layers meet: transports hand it bundle files (or, for the
network, a dulwich client), it asks the history layer to quarantine each one, the trust
layer to verify every new commit, and only then moves the accepted tip (state file
first, then the ref), reconciles the newest valid spec, and writes one signed status
commit. A bundle and a fetch take exactly the same path from the quarantine on
(``_import``). Any refusal leaves the applied state, the accepted tip and the files on
disk as they were, and is reported; so is a hub that cannot be reached (``offline``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from giter_agent.config.agent_toml import Config
from giter_agent.core.errors import (
    BundleError,
    ConfigError,
    GiterError,
    HistoryError,
    HubIdentityError,
    HubOffline,
    HubRemoteError,
    MissingPrerequisite,
    NetworkError,
    Reason,
    RemoteRefMoved,
    TreeError,
    TrustError,
    UnreadableBundle,
)
from giter_agent.device.board import Board, load_board, make_pin_factory
from giter_agent.kinds import load_kinds
from giter_agent.kinds.base import Context
from giter_agent.reconcile.engine import reconcile, rfc3339
from giter_agent.spec.resources import SpecSet, prefixes, select
from giter_agent.state.store import State, StateStore, state_lock
from giter_agent.status.report import (
    BundleVerdict,
    SyncReport,
)
from giter_agent.transport.network import Remote

log = logging.getLogger("giter.sync")
# Writing the status bundle follows a sync that has just released the lock; a timer pass
# of the daemon may hold it for a moment. Waiting this long beats refusing the stick.
STATUS_BUNDLE_LOCK_WAIT_S = 60.0

# Tries at pushing status/<device> when the hub's copy moved under us (fetch in between).
PUSH_ATTEMPTS = 3


class Agent:
    """The device side, built from a ``Config``; dependencies passed in for tests."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time,
                 pin_factory_maker: Callable[[Board], Any] = make_pin_factory,
                 board: Board | None = None) -> None:
        self.config = config
        self.clock = clock
        base = config.source.resolve().parent if config.source else None
        self.board = board or load_board(config.board, base)
        self.ctx = Context(board=self.board, files_roots=config.files_roots,
                           pin_factory_maker=pin_factory_maker, clock=clock,
                           commands=config.commands, settings_config=config.agent)
        self.kinds = load_kinds()  # built-in kinds and giter_agent.kinds plug-ins
        self.state_store = StateStore(config.state_dir)

    # -- paths and lazily opened parts -------------------------------------------------
    @property
    def repo_path(self) -> Path:
        return self.config.state_dir / "repo.git"

    @property
    def key_path(self) -> Path:
        return self.config.state_dir / "device_key"

    def _prepare(self) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _locked_history(self) -> Any:
        """The repository, recovered from any crash: only under the state lock."""
        history = self._history()
        history.recover()
        return history

    def _history(self) -> Any:
        from giter_agent.history.store import Caps, History

        lim = self.config.limits
        return History(self.repo_path, Caps(max_bundle_bytes=lim.max_bundle_mib * 2**20,
                                            max_objects=lim.max_objects,
                                            max_object_bytes=lim.max_object_mib * 2**20,
                                            time_budget_s=float(lim.time_budget_s)))

    def device_key(self) -> Any:
        """The device's ed25519 key, created on first use (mode 0600)."""
        from giter_agent.trust.devicekey import load_or_create

        self._prepare()
        return load_or_create(self.key_path)

    def public_key_line(self) -> str:
        from giter_agent.trust.devicekey import allowed_signers_line

        return allowed_signers_line(self.device_key(), self.config.device_id)

    def _trust_root(self) -> Any:
        from giter_agent.trust.verify import TrustRoot

        return TrustRoot.load(self.config.allowed_signers, self.config.root_keys,
                              self.config.genesis)

    # -- the pass ---------------------------------------------------------------------
    def sync(self, bundles: list[Path], source: str) -> SyncReport:
        """Import ``bundles`` (in any order), then reconcile and report. Holds the lock."""
        self._prepare()
        with state_lock(self.config.state_dir):
            state = self.state_store.load()
            root = self._trust_root()
            with self._locked_history() as history:
                self._repair_ref(history, state)
                verdicts = self._import_all(history, state, root, bundles)
                report = self._summarise(verdicts, state)
                self._apply(history, state, report, source)
            return report

    def reconcile_pass(self, source: str = "timer") -> SyncReport:
        """A level-based pass with nothing new to import: re-apply the applied spec,
        correct drift, refresh status (committed only if it changed). Holds the lock.

        The daemon calls this on its timers; the last sync's record is left as it was.
        """
        self._prepare()
        with state_lock(self.config.state_dir):
            state = self.state_store.load()
            if state.applied:
                report = SyncReport("up-to-date", "InSync",
                                    f"spec {state.applied[:12]} applied")
            else:
                report = SyncReport("no-bundles", "NoSpec", "no spec has been applied yet")
            with self._locked_history() as history:
                self._repair_ref(history, state)
                self._apply(history, state, report, source, record_sync=False)
            return report

    def _repair_ref(self, history: Any, state: State) -> None:
        # The state file is the truth; the refs mirror it for git tools and bundles. A
        # power cut (or a daemon abandoning a pass on SIGTERM) between moving a ref and
        # saving the state leaves them apart; the next pass puts the ref back.
        for ref, tip in ((self.config.branch_ref, state.accepted),
                         (self.config.status_ref, state.status_tip)):
            if tip and history.ref(ref) != tip.encode():
                history.set_ref(ref, history.ref(ref), tip.encode())

    def _import_all(self, history: Any, state: State, root: Any,
                    bundles: list[Path]) -> list[BundleVerdict]:
        pending = sorted(bundles)
        done: list[BundleVerdict] = []
        # A stick may carry incremental bundles that build on each other: retry the ones
        # whose prerequisites were missing until a pass makes no progress.
        while pending:
            progressed = False
            waiting: list[tuple[Path, BundleVerdict]] = []
            for path in pending:
                verdict = self._import_one(history, state, root, path)
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

    def _import_one(self, history: Any, state: State, root: Any, path: Path) -> BundleVerdict:
        return self._import(history, state, root, path.name, lambda: history.quarantine(path))

    def _import(self, history: Any, state: State, root: Any, name: str,
                open_quarantine: Callable[[], contextlib.AbstractContextManager[Any]]
                ) -> BundleVerdict:
        """The one import path for every transport: quarantine, verify, promote, accept.

        ``open_quarantine()`` yields a checked ``Quarantine`` (of a bundle file or of a
        fetch); from there on a bundle and a fetch are treated exactly alike.
        """
        from giter_agent.trust.verify import verify_update

        ref = self.config.branch_ref
        try:
            with open_quarantine() as q:
                tip = q.refs.get(ref)
                if tip is None:
                    return BundleVerdict(name, "unusable", "NoSpecBranch",
                                         f"{name} has no {ref.decode()}")
                if state.accepted and tip.decode() == state.accepted:
                    return BundleVerdict(name, "up-to-date", "UpToDate",
                                         f"spec {tip.decode()[:12]} is already accepted")
                accepted = state.accepted.encode() if state.accepted else None
                verified = verify_update(q.object_store, accepted, tip, root,
                                         max_commits=self.config.limits.max_commits)
                q.promote()
        except (BundleError, HistoryError, TrustError) as exc:
            # Only a bundle that cannot be used at all is "unusable"; one that was read and
            # failed a check is "refused", and a refusal is always reported loudly.
            unusable = isinstance(exc, MissingPrerequisite | UnreadableBundle)
            verdict = "unusable" if unusable else "refused"
            log.warning("%s %s: %s: %s", name, verdict, exc.reason, exc,
                        extra={"event": verdict, "reason": exc.reason,
                               "commit": getattr(exc, "commit", None)})
            return BundleVerdict(name, verdict, exc.reason, str(exc))
        except NetworkError:
            raise  # the hub, not the data: the caller reports it as offline
        except OSError as exc:
            log.warning("%s unreadable: %s", name, exc,
                        extra={"event": "unusable", "reason": "BundleUnreadable"})
            return BundleVerdict(name, "unusable", "BundleUnreadable", f"cannot read: {exc}")
        old = state.accepted
        state.accepted = tip.decode()
        state.expires = verified.expires.isoformat() if verified.expires else None
        self.state_store.save(state)  # durable before anything acts on the new spec
        history.set_ref(ref, old.encode() if old else None, tip)
        n = len(verified.commits)
        log.info("%s: accepted spec %s (%d new commit%s verified)",
                 name, state.accepted, n, "" if n == 1 else "s",
                 extra={"event": "accepted", "spec": state.accepted})
        return BundleVerdict(name, "applied", "Verified",
                             f"{n} new commit{'' if n == 1 else 's'} verified, "
                             f"spec {state.accepted[:12]}")

    def _summarise(self, verdicts: list[BundleVerdict], state: State) -> SyncReport:
        refused = [v for v in verdicts if v.verdict == "refused"]
        if refused:
            v = refused[0]
            return SyncReport("refused", v.reason, f"{v.file}: {v.message}", bundles=verdicts)
        if any(v.verdict == "applied" for v in verdicts):
            return SyncReport("applied", "Verified", f"spec {state.accepted[:12]} accepted",
                              bundles=verdicts)
        if any(v.verdict == "up-to-date" for v in verdicts):
            return SyncReport("up-to-date", "UpToDate",
                              f"spec {state.accepted[:12]} already applied", bundles=verdicts)
        if verdicts:
            v = verdicts[0]
            return SyncReport("unusable", v.reason, f"{v.file}: {v.message}", bundles=verdicts)
        return SyncReport("no-bundles", "NoBundles", "no bundle to import", bundles=verdicts)

    def _read_spec(self, history: Any, commit: str) -> SpecSet:
        from giter_agent.history.tree import iter_files

        store = history.object_store
        tree = store[commit.encode()].tree
        files: list[tuple[str, bytes]] = []
        for prefix in prefixes(self.config.device_id, self.config.groups):
            files.extend(iter_files(store, tree, prefix, max_blob=2 * 2**20))
        return select(files)

    def _apply(self, history: Any, state: State, report: SyncReport, source: str,
               *, record_sync: bool = True) -> None:
        invalid_spec: str | None = None
        specset: SpecSet | None = None
        if state.accepted:
            try:
                specset = self._read_spec(history, state.accepted)
                state.applied = state.accepted
            except TreeError as exc:
                invalid_spec = f"spec {state.accepted[:12]}: {exc}"
                if state.applied:
                    specset = self._read_spec(history, state.applied)
        if invalid_spec:
            report.outcome, report.reason = "invalid-spec", "InvalidTree"
            report.message = invalid_spec + (
                f"; spec {state.applied[:12]} stays applied" if state.applied else "")
        if specset is not None and state.applied:
            result = reconcile(specset, self.ctx, self.kinds, state.resources, state.applied)
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
                               "bundles": [vars(v) for v in report.bundles],
                               "notReady": report.not_ready}
        if state.applied:
            state.status_tip = self._commit_status(history, state, report, now)
            history.pack_loose()
        self.state_store.save(state)
        report.accepted, report.applied = state.accepted, state.applied
        report.status_commit = state.status_tip
        report.network = dict(state.network) if self.config.network else None

    def _commit_status(self, history: Any, state: State, report: SyncReport,
                       now: float) -> str | None:
        from giter_agent.history.tree import replace_files
        from giter_agent.status.documents import make_status_commit, status_files
        from giter_agent.trust.signed_commit import sign_commit

        store = history.object_store
        summary = {
            "acceptedCommit": state.accepted,
            "appliedCommit": state.applied,
            "expires": state.expires,
            # What the publisher must hear about, and nothing that differs between two
            # syncs of the same stick: a re-sync that changes nothing makes no commit.
            "refused": [b for b in state.last_sync.get("bundles", [])
                        if b["verdict"] == "refused"],
            "invalid": [{"path": r["path"], "reason": r["status"]["conditions"][0]["reason"],
                         "message": r["status"]["conditions"][0]["message"]}
                        for r in state.resources.values() if r.get("invalid")],
            "notReady": report.not_ready,
            "conditions": state.conditions,
        }
        files = status_files(self.config.device_id, state.resources, summary)
        spec = state.applied.encode()
        tree = replace_files(store, store[spec].tree, files)
        key = self.device_key()
        previous = state.status_tip.encode() if state.status_tip else None
        what = {"applied": "applied", "up-to-date": "in sync"}.get(report.outcome,
                                                                    report.outcome)
        ready = len(state.resources) - len(report.not_ready)
        message = (f"status: {what}, {ready}/{len(state.resources)} resources Ready "
                   f"(spec {state.applied[:12]})")
        new = make_status_commit(store, spec_commit=spec, previous=previous, tree=tree,
                                 device_id=self.config.device_id, message=message,
                                 sign=lambda c: sign_commit(c, key), now=int(now))
        if new is None:
            return state.status_tip
        history.set_ref(self.config.status_ref, previous, new)
        return new.decode()

    # -- the network -------------------------------------------------------------------
    def sync_network(self, remote: Remote | None = None) -> SyncReport:
        """Fetch the spec branch from the hub, verify and apply it exactly as a bundle,
        then push ``status/<device>``. Holds the lock.

        A hub that cannot be reached is reported (outcome ``offline``; ``error`` when it
        refuses us; ``refused`` when it is not the pinned hub), never raised: the
        applied spec is reconciled all the same, and ``state.network`` records it. A
        ``remote`` may be passed in (tests); by default one is opened from the config.
        """
        from giter_agent.transport.network import open_remote

        net = self.config.network
        if net is None:
            raise ConfigError("no [network] url in the config: `giter-agent sync` needs "
                              "one, or --usb DIR / --bundle FILE")
        self._prepare()
        with state_lock(self.config.state_dir):
            state = self.state_store.load()
            root = self._trust_root()
            own_remote = remote is None
            remote = remote or open_remote(net)
            try:
                with self._locked_history() as history:
                    self._repair_ref(history, state)
                    return self._network_pass(history, state, root, remote)
            finally:
                if own_remote:
                    remote.close()

    def _network_pass(self, history: Any, state: State, root: Any, remote: Remote
                      ) -> SyncReport:
        source = f"network:{remote.display}"
        listed: dict[bytes, bytes] = {}
        failure: NetworkError | None = None
        try:
            verdict = self._import(history, state, root, remote.display,
                                   lambda: self._fetched(history, state, remote, listed))
        except NetworkError as exc:
            failure = exc
            log.warning("%s", exc, extra={"event": "offline", "reason": exc.reason})
        if failure is None:
            report = self._summarise([verdict], state)
            self._apply(history, state, report, source)
            hub_status = listed.get(self.config.status_ref)
            pushed, failure = self._push_status(history, state, remote, hub_status)
            if failure is not None:
                report.message += f"; status not pushed: {failure.reason}: {failure}"
        else:
            outcome = ("refused" if isinstance(failure, HubIdentityError)
                       else "offline" if isinstance(failure, HubOffline) else "error")
            report = SyncReport(outcome, failure.reason, str(failure))
            self._apply(history, state, report, source, record_sync=False)
            pushed = None
        self._record_network(state, remote, failure, pushed)
        self.state_store.save(state)
        report.network = dict(state.network)
        return report

    @contextlib.contextmanager
    def _fetched(self, history: Any, state: State, remote: Remote,
                 listed: dict[bytes, bytes], refs: tuple[bytes, ...] | None = None
                 ) -> Iterator[Any]:
        """A quarantined fetch of the spec branch (or ``refs``), transport errors mapped.

        The hub's ``status/<device>`` is listed too (not fetched): if it already holds
        our status tip, there is nothing to push, and no second connection is made.
        """
        from giter_agent.transport.network import transport_errors

        haves = [t.encode() for t in (state.accepted, state.status_tip) if t]
        with contextlib.ExitStack() as stack:
            with transport_errors(remote.display):
                q = stack.enter_context(history.quarantine_fetch(
                    remote.client, remote.path, refs or (self.config.branch_ref,),
                    also_list=(self.config.status_ref,), haves=haves))
            listed.update(q.listed)
            yield q

    def _push_status(self, history: Any, state: State, remote: Remote,
                     hub: bytes | None) -> tuple[bool, NetworkError | None]:
        """Bring the hub's ``status/<device>`` to our status tip, fast-forward only.

        Returns (whether the hub now holds our tip, the failure if any). When the hub's
        ref moved to a commit we do not build on (another copy of this device, a state
        directory restored from a backup), its commit is fetched through the same
        quarantine and our report is re-made on top of it: never forced.
        """
        from giter_agent.transport.network import transport_errors

        ref = self.config.status_ref
        for _ in range(PUSH_ATTEMPTS):
            if not state.status_tip:
                return False, None
            tip = state.status_tip.encode()
            if hub == tip:
                return True, None

            def fast_forward(old: bytes | None, tip: bytes = tip) -> bool:
                return old is None or (old in history.object_store
                                       and history.is_ancestor(old, tip))

            try:
                try:
                    with transport_errors(remote.display):
                        history.push_ref(remote.client, remote.path, ref, tip,
                                         may_replace=fast_forward)
                    log.info("pushed %s %s to %s", ref.decode(), tip.decode(), remote.display,
                             extra={"event": "pushed"})
                    return True, None
                except RemoteRefMoved as exc:
                    log.info("%s: %s; fetching it first", remote.display, exc,
                             extra={"event": "push-retry", "reason": exc.reason})
                listed: dict[bytes, bytes] = {}
                with self._fetched(history, state, remote, listed, refs=(ref,)) as q:
                    q.promote()  # a status commit drives nothing: complete is enough
                hub = listed.get(ref)
                if hub is not None and not fast_forward(hub):
                    self._rebase_status(history, state, hub)
            except NetworkError as exc:
                log.warning("%s", exc, extra={"event": "push-failed", "reason": exc.reason})
                return False, exc
            except (BundleError, HistoryError) as exc:
                log.warning("%s: cannot take the hub's %s: %s: %s", remote.display,
                            ref.decode(), exc.reason, exc,
                            extra={"event": "push-failed", "reason": exc.reason})
                return False, HubRemoteError(f"{remote.display}: {exc}")
        return False, HubRemoteError(f"{remote.display}: {ref.decode()} kept moving; "
                                     f"gave up after {PUSH_ATTEMPTS} tries")

    def _rebase_status(self, history: Any, state: State, hub: bytes) -> None:
        """Re-make our newest status report on top of the hub's ``status/<device>``."""
        from giter_agent.status.documents import make_status_commit
        from giter_agent.trust.signed_commit import sign_commit

        store = history.object_store
        assert state.status_tip is not None
        mine = store[state.status_tip.encode()]
        key = self.device_key()
        subject = mine.message.split(b"\n", 1)[0].decode(errors="replace")
        new = make_status_commit(store, spec_commit=mine.parents[-1], previous=hub,
                                 tree=mine.tree, device_id=self.config.device_id,
                                 message=subject, sign=lambda c: sign_commit(c, key),
                                 now=int(self.clock()))
        new = new or hub  # the hub already says exactly what we would
        old = state.status_tip.encode()
        state.status_tip = new.decode()
        self.state_store.save(state)
        history.set_ref(self.config.status_ref, old, new)
        log.info("status %s re-made on top of the hub's %s", new.decode(), hub.decode(),
                 extra={"event": "status-rebased"})

    def _record_network(self, state: State, remote: Remote, failure: NetworkError | None,
                        pushed: bool | None) -> None:
        now = rfc3339(self.clock())
        net = dict(state.network)
        if failure is None:
            kind, reason = "online", "Connected"
            message = (f"{remote.display}: in contact"
                       + ("; the hub holds our status" if pushed else ""))
            net["failures"] = 0
            net["lastContact"] = now
        else:
            kind = ("refused" if isinstance(failure, HubIdentityError)
                    else "offline" if isinstance(failure, HubOffline) else "error")
            reason, message = failure.reason, str(failure)
            net["failures"] = int(net.get("failures", 0)) + 1
            if pushed is False and not isinstance(failure, HubOffline):
                net["lastContact"] = now  # the fetch went through; only the push did not
        if net.get("state") != kind or net.get("reason") != reason:
            net["since"] = now
        net.update(url=remote.display, state=kind, reason=reason, message=message,
                   lastAttempt=now)
        if pushed:
            net["hubStatus"] = state.status_tip
        state.network = net

    def next_wakeup(self) -> float | None:
        """When the daemon should run ``reconcile_pass`` next (clock time), or None."""
        return self.ctx.next_wakeup()

    def write_status_bundle(self, path: Path, hub_has: str | None = None) -> bool:
        """Write ``status/<device>`` as a bundle the hub can fetch; False if none yet.

        ``hub_has`` is the status commit the hub holds, as the publisher's stick says
        (``transport.usb.read_hub_status``): the bundle leaves it and its history out, so it
        stays small however long the device has been reporting. The stick is not signed,
        so the word is only used to leave things out, and only if it names a commit the
        status tip reaches; anything else gets the whole chain. (A hub that lacks what
        it was said to hold refuses the bundle for a missing prerequisite: the next
        stick, with the hub's true word, mends it.)
        """
        # A pack is written into the repository: only under the state lock, so that the
        # lock holder's recovery never takes it for a crash's leftover.
        with state_lock(self.config.state_dir, wait_s=STATUS_BUNDLE_LOCK_WAIT_S):
            return self._write_status_bundle(path, hub_has)

    def _write_status_bundle(self, path: Path, hub_has: str | None) -> bool:
        state = self.state_store.load()
        if not state.status_tip or not state.applied:
            return False
        tip = state.status_tip.encode()
        exclude = [state.applied.encode()]
        with self._history() as history:
            if hub_has is not None:
                ack = hub_has.encode()
                if ack in history.object_store and history.is_ancestor(ack, tip):
                    exclude.append(ack)
                else:
                    log.info("the stick says the hub holds status %s, which is not in this "
                             "device's status history: writing the whole chain", hub_has[:12])
            history.write_bundle(path, {self.config.status_ref: tip}, exclude=exclude)
        return True

    def close(self) -> None:
        self.ctx.close()


def stale_condition(state: State, now: float) -> dict[str, Any]:
    """The device's ``Stale`` condition: has the accepted spec's ``Expires:`` passed?

    Compared with the device's own clock; the commit's dates play no part.
    """
    from datetime import datetime

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


def refusal(exc: GiterError) -> str:
    """The one-line form of a refusal, as the CLI and the receipt print it."""
    return f"{exc.reason}: {exc}"
