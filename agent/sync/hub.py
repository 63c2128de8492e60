"""The hub exchange: fetch the spec branch, import it like a bundle, push our status.

``HubExchange.exchange`` runs under the state lock (``sync.agent.Agent.sync_network``):
the fetch lands in a quarantine and goes through the same import gate as a stick's
bundle (``sync.importer``), the spec is applied (``sync.applier``), then
``status/<device>`` is pushed fast-forward only (re-made on top of the hub's when the
hub moved). A hub that cannot be reached, refuses us, or is not the pinned hub is
recorded in ``state.network`` and reported, never raised.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from giter_agent.config.agent_toml import Config
from giter_agent.core.errors import (
    BundleError,
    HistoryError,
    HubIdentityError,
    HubOffline,
    HubRemoteError,
    NetworkError,
    RemoteRefMoved,
)
from giter_agent.core.log import get_logger
from giter_agent.core.times import rfc3339
from giter_agent.history.chain_export import reaches
from giter_agent.history.objects import has_object, read_commit
from giter_agent.state.records import NetworkRecord
from giter_agent.state.store import State, StateStore
from giter_agent.status.report import SyncReport
from giter_agent.sync.applier import SpecApplier
from giter_agent.sync.bounds import PUSH_ATTEMPTS  # tries at pushing when the hub moved
from giter_agent.sync.importer import SpecImporter, summarise

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from giter_agent.core.budget import Budget
    from giter_agent.history.store import History
    from giter_agent.transport.network import Remote  # imported when a sync uses the hub
    from giter_agent.trust.trust_files import TrustRoot

log = get_logger("giter.sync")



class HubExchange:
    """One network pass against the configured hub."""

    def __init__(self, config: Config, state_store: StateStore, importer: SpecImporter,
                 applier: SpecApplier, clock: Callable[[], float],
                 device_key: Callable[[], Ed25519PrivateKey]) -> None:
        self.config = config
        self.state_store = state_store
        self.importer = importer
        self.applier = applier
        self.clock = clock
        self.device_key = device_key

    def exchange(self, history: History, state: State, root: TrustRoot, remote: Remote,
                 budget: Budget) -> SyncReport:
        """Fetch and import the spec branch, apply, push status; record the hub's state.

        ``budget`` is the sync's time budget, shared by the fetch, its gate and its
        verification."""
        source = f"network:{remote.display}"
        listed: dict[bytes, bytes] = {}
        failure: NetworkError | None = None
        try:
            verdict = self.importer.import_one(
                history, state, root, remote.display,
                lambda: self._fetched(history, state, remote, listed, budget=budget), budget)
        except NetworkError as exc:
            failure = exc
            log.warning("%s", exc, extra={"event": "offline", "reason": exc.reason})
        if failure is None:
            report = summarise([verdict], state)
            self.applier.apply(history, state, report, source)
            hub_status = listed.get(self.config.status_ref)
            pushed, failure = self._push_status(history, state, remote, hub_status)
            if failure is not None:
                report.message += f"; status not pushed: {failure.reason}: {failure}"
        else:
            outcome = ("refused" if isinstance(failure, HubIdentityError)
                       else "offline" if isinstance(failure, HubOffline) else "error")
            report = SyncReport(outcome, failure.reason, str(failure))
            self.applier.apply(history, state, report, source, record_sync=False)
            pushed = None
        self._record_network(state, remote, failure, pushed)
        self.state_store.save(state)
        self.applier.write_metrics(history, state)  # the hub's state is news too
        report.network = state.network
        return report

    @contextlib.contextmanager
    def _fetched(self, history: History, state: State, remote: Remote,
                 listed: dict[bytes, bytes], refs: tuple[bytes, ...] | None = None,
                 budget: Budget | None = None) -> Iterator[Any]:
        """A quarantined fetch of the spec branch (or ``refs``), transport errors mapped.

        The hub's ``status/<device>`` is listed too (not fetched): if it already holds
        our status tip, there is nothing to push, and no second connection is made.
        """
        from giter_agent.transport.network import transport_errors

        # The spec fetch offers the accepted spec only: offering the status tip too made
        # the negotiation walk the whole status history (a year of reports) as haves.
        # Fetching the hub's status ref (a push that must build on it) offers both.
        offered = (state.accepted,) if refs is None else (state.accepted, state.status_tip)
        haves = [t.encode() for t in offered if t]
        with contextlib.ExitStack() as stack:
            with transport_errors(remote.display):
                q = stack.enter_context(history.quarantine_fetch(
                    remote.client, remote.path, refs or (self.config.branch_ref,),
                    also_list=(self.config.status_ref,), haves=haves, budget=budget))
            listed.update(q.listed)
            yield q

    def _push_status(self, history: History, state: State, remote: Remote,
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
                # The status history is a first-parent chain: read back to ``old`` only.
                return old is None or (has_object(history.object_store, old)
                                       and reaches(history.object_store, tip, old))

            try:
                try:
                    with transport_errors(remote.display):
                        history.push_ref(remote.client, remote.path, ref, tip,
                                         may_replace=fast_forward, first_parent=True)
                    log.info("pushed %s %s to %s", ref.decode(), tip.decode(), remote.display,
                             extra={"event": "pushed"})
                    return True, None
                except RemoteRefMoved as exc:
                    log.info("%s: %s; fetching it first", remote.display, exc,
                             extra={"event": "push-retry", "reason": exc.reason})
                listed: dict[bytes, bytes] = {}
                with self._fetched(history, state, remote, listed, refs=(ref,)) as q:
                    if ref in q.refs:
                        _observes_held_specs(q, q.refs[ref])
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

    def _rebase_status(self, history: History, state: State, hub: bytes) -> None:
        """Re-make our newest status report on top of the hub's ``status/<device>``."""
        from giter_agent.status.documents import make_status_commit
        from giter_agent.trust.signed_commit import sign_commit

        store = history.object_store
        assert state.status_tip is not None
        mine = read_commit(store, state.status_tip.encode())
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
        net = state.network or NetworkRecord()
        contact = net.last_contact
        if failure is None:
            kind, reason = "online", "Connected"
            message = (f"{remote.display}: in contact"
                       + ("; the hub holds our status" if pushed else ""))
            failures, contact = 0, now
        else:
            kind = ("refused" if isinstance(failure, HubIdentityError)
                    else "offline" if isinstance(failure, HubOffline) else "error")
            reason, message = failure.reason, str(failure)
            failures = net.failures + 1
            if pushed is False and not isinstance(failure, HubOffline):
                contact = now  # the fetch went through; only the push did not
        since = now if (net.state != kind or net.reason != reason) else net.since
        state.network = net._replace(
            url=remote.display, state=kind, reason=reason, message=message,
            since=since, failures=failures, last_attempt=now, last_contact=contact,
            hub_status=state.status_tip if pushed else net.hub_status)


def _observes_held_specs(q: Any, tip: bytes) -> None:
    """The hub's status chain may come in only if every report in it observes a spec
    commit this device already holds.

    Otherwise promoting it would bring in spec commits the device never verified, and
    the trust rule (docs/trust.md) counts a commit the device holds as old history: the
    spec branch's next update through them would be refused as a fork for good.
    """
    todo, seen = [tip], set()
    while todo:
        sha = todo.pop()
        if sha in seen or q.held(sha):
            continue
        seen.add(sha)
        parents = q.object_store[sha].parents
        if len(parents) not in (1, 2) or not q.held(parents[-1]):
            raise HistoryError(f"the hub's status commit {sha.decode()} observes a spec "
                               "commit this device has not accepted", reason="UnknownSpecCommit")
        todo.extend(parents[:-1])
