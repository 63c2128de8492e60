"""The device's composition root: the layers joined, one method per entry point.

``Agent`` builds the parts from a ``Config`` (board, pins, kinds, state store) and
wires the four steps a sync is made of, each in a module of its own:

- ``sync.importer``: the import gate (quarantine, verify every new commit, promote,
  accept), one path for a stick's bundle and a fetch alike;
- ``sync.applier``: reconcile the newest valid spec and commit signed status;
- ``sync.hub``: the network exchange (fetch, import, apply, push status);
- ``sync.export``: the status history as a bundle for the hub.

Every entry point holds the state lock, and the lock holder recovers the state
directory (``state.recovery``) before anything reads it. Any refusal leaves the
applied state, the accepted tip and the files on disk as they were, and is reported.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from giter_agent.config.agent_toml import Config
from giter_agent.core.errors import ConfigError, GiterError, HistoryError, Reason, StorageError
from giter_agent.core.layout import DEVICES_DIR
from giter_agent.core.log import get_logger
from giter_agent.device.board import Board, load_board, make_pin_factory
from giter_agent.device.outputs import HeldOutputs
from giter_agent.kinds import Kinds
from giter_agent.kinds.agent_envs import AgentEnvs
from giter_agent.kinds.base import Context
from giter_agent.state.command_journal import CommandJournal
from giter_agent.state.release_journal import ReleaseJournal
from giter_agent.state.store import State, StateStore, state_lock
from giter_agent.state.update_journal import FILE as UPDATE_JOURNAL
from giter_agent.state.update_journal import UpdateJournal
from giter_agent.status.report import (
    EXIT_NOT_READY,
    EXIT_OFFLINE,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    BundleVerdict,
    SyncReport,
)
from giter_agent.sync.applier import SpecApplier, stale_condition
from giter_agent.sync.bounds import PUSH_ATTEMPTS
from giter_agent.sync.importer import SpecImporter, summarise

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from giter_agent.core.budget import Budget
    from giter_agent.history.store import History
    from giter_agent.sync.hub import HubExchange
    from giter_agent.transport.network import Remote  # imported when a sync uses the hub
    from giter_agent.trust.trust_files import TrustRoot

__all__ = ["EXIT_NOT_READY", "EXIT_OFFLINE", "EXIT_OK", "EXIT_REFUSED", "EXIT_USAGE",
           "PUSH_ATTEMPTS", "Agent", "BundleVerdict", "SyncReport", "refusal",
           "stale_condition"]

log = get_logger("giter.sync")
# Writing the status bundle follows a sync that has just released the lock; a timer pass
# of the daemon may hold it for a moment. Waiting this long beats refusing the stick.
STATUS_BUNDLE_LOCK_WAIT_S = 60.0
JOURNAL = "commands.journal"  # in the state directory (state.command_journal)
RELEASE_JOURNAL = "releases.journal"  # in the state directory (state.release_journal)


class Agent:
    """The device side, built from a ``Config``; dependencies passed in for tests."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time,
                 pin_factory_maker: Callable[[Board], Any] = make_pin_factory,
                 board: Board | None = None,
                 monotonic: Callable[[], float] = time.monotonic, lasting: bool = True,
                 lock_owner: int | None = None, clean: bool = False) -> None:
        """``lasting``: this process stays to hold what it sets (the daemon); False for
        a one-shot command, whose Outputs then report what outlives it. ``monotonic``:
        the time budget's clock (one budget per sync). ``lock_owner`` and ``clean``: a
        pass worker holds the state lock for the daemon (its pid) and carries on from
        the daemon's last pass (clean: no full recovery sweep needed; see ``_locked``)."""
        self.config = config
        self.clock = clock
        self.monotonic = monotonic  # the time budget's clock (one budget per sync)
        base = config.source.resolve().parent if config.source else None
        self.board = board or load_board(config.board, base)
        self.ctx = Context(board=self.board, files_roots=config.files_roots,
                           pin_factory_maker=pin_factory_maker, clock=clock,
                           commands=config.commands, services=config.services,
                           packages_allowed=config.packages,
                           command_journal=CommandJournal(config.state_dir / JOURNAL),
                           release_journal=ReleaseJournal(config.state_dir / RELEASE_JOURNAL),
                           update_journal=UpdateJournal(config.state_dir / UPDATE_JOURNAL),
                           agent_envs=AgentEnvs(config.state_dir),
                           settings_config=config.agent, identity=self.device_key,
                           lasting=lasting)
        self.ctx.outputs = HeldOutputs(lambda: self.ctx.pin_factory)
        self.kinds = Kinds()  # built-in kinds and giter_agent.kinds plug-ins, loaded on use
        self.state_store = StateStore(config.state_dir)
        self.importer = SpecImporter(config, self.state_store)
        self.applier = SpecApplier(config, self.state_store, self.ctx, self.kinds, clock,
                                   self.device_key)
        self.lock_owner = lock_owner
        # Whether this process's last pass under the lock ended cleanly (see _locked).
        self.clean = clean

    # -- paths and lazily opened parts -------------------------------------------------
    @functools.cached_property
    def hub(self) -> HubExchange:
        """The network exchange, built on first use: a sync from a stick or a bundle
        file does not import it."""
        from giter_agent.sync.hub import HubExchange

        return HubExchange(self.config, self.state_store, self.importer, self.applier,
                           self.clock, self.device_key)

    @property
    def repo_path(self) -> Path:
        return self.config.state_dir / "repo.git"

    @property
    def key_path(self) -> Path:
        from giter_agent.config.agent_toml import DEVICE_KEY_FILE

        return self.config.state_dir / DEVICE_KEY_FILE

    def _prepare(self) -> None:
        from giter_agent.core.durable import mkdir_durable

        mkdir_durable(self.config.state_dir, mode=0o700)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[State]:
        """Hold the state lock, recover the state directory, and yield the state.

        Recovery (``giter_agent.state.recovery``) is the lock holder's first act: a full
        sweep when another process held the lock since this one's last pass (it may have
        died mid-write) or when this process's last pass failed; refs are always made to
        agree with the state file. A disk that refuses a write (full, failing) ends the
        pass with a ``StorageError``; what was durable before stays in force.
        """
        from giter_agent.state.recovery import recover

        cfg = self.config
        try:
            self._prepare()
            with state_lock(cfg.state_dir, owner=self.lock_owner) as took_over:
                state = self.state_store.load()
                recover(cfg.state_dir, refs=((cfg.branch_ref, state.accepted),
                                             (cfg.status_ref, state.status_tip)),
                        files_roots=cfg.files_roots, sweep=took_over or not self.clean)
                self.clean = False
                yield state
                self.clean = True
        except (GiterError, PermissionError):
            raise  # a file this user may not write: the CLI says whose it is and what to run
        except OSError as exc:
            raise self._storage_error(exc) from None
        except Exception as exc:
            # dulwich's FileLocked: recovery removed the stale locks, so a live writer's.
            # Only a ref or object write raises it, and that loaded dulwich.file first (a
            # steady sync loads no dulwich, so it is not imported here to be caught).
            file_mod = sys.modules.get("dulwich.file")
            if file_mod is None or not isinstance(exc, file_mod.FileLocked):
                raise
            locked: Any = exc
            raise HistoryError(f"{locked.filename!s} is locked by another writer "
                               f"({locked.lockfilename!s} exists)",
                               reason=Reason.RepositoryLocked) from None

    def _storage_error(self, exc: OSError) -> StorageError:
        try:
            applied = self.state_store.load().applied
        except (GiterError, OSError):
            applied = None
        still = (f"spec {applied[:12]} stays applied" if applied
                 else "no spec has been applied yet")
        return StorageError.of(exc, f"to {self.config.state_dir}", still)

    def _history(self) -> History:
        from giter_agent.history.store import Caps, History

        return History(self.repo_path, Caps.from_limits(self.config.limits))

    def device_key(self) -> Ed25519PrivateKey:
        """The device's ed25519 key, created on first use (mode 0600)."""
        from giter_agent.trust.devicekey import load_or_create

        self._prepare()
        return load_or_create(self.key_path)

    def public_key_line(self) -> str:
        from giter_agent.trust.devicekey import allowed_signers_line

        return allowed_signers_line(self.device_key(), self.config.device_id)

    def _budget(self, max_bytes: int | None = None) -> Budget:
        """The one budget of a sync pass, shared by every bundle, read and stage in it."""
        from giter_agent.core.budget import Budget

        return Budget(float(self.config.limits.time_budget_s), self.monotonic,
                      max_bytes=max_bytes)

    def enrolled(self) -> bool:
        """Does the accepted spec hold this device's key (``.giter/devices/<id>.pub``, what
        ``giter-bundle enroll`` commits)? False before any spec: nobody enrolled it yet."""
        from giter_agent.history.objects import read_commit
        from giter_agent.history.tree import read_file

        state = self.state_store.load()
        if not state.accepted:
            return False
        try:
            with self._history() as history:
                tree = read_commit(history.object_store, state.accepted.encode()).tree
                text = read_file(history.object_store, tree,
                                 f"{DEVICES_DIR}/{self.config.device_id}.pub",
                                 max_blob=65536)
        except (GiterError, KeyError):
            return False
        mine = self.public_key_line().split()[-1]  # the base64 key blob
        return text is not None and mine.encode() in text.split()

    def _trust_root(self) -> TrustRoot:
        from giter_agent.trust.trust_files import TrustRoot

        return TrustRoot.load(self.config.allowed_signers, self.config.root_keys,
                              self.config.genesis)

    # -- the entry points ---------------------------------------------------------------
    def sync(self, bundles: list[Path], source: str) -> SyncReport:
        """Import ``bundles`` (in any order), then reconcile and report. Holds the lock."""
        with self._locked() as state:
            # Loaded once, and only if a bundle brings something to verify.
            root = functools.cache(self._trust_root)
            with self._history() as history:
                verdicts = self.importer.import_bundles(history, state, root, bundles,
                                                        self._budget())
                report = summarise(verdicts, state)
                self.applier.apply(history, state, report, source)
            return report

    def reconcile_pass(self, source: str = "timer", *, due_only: bool = False) -> SyncReport:
        """A level-based pass with nothing new to import: re-apply the applied spec,
        correct drift, refresh status (committed only if it changed). Holds the lock.

        The daemon calls this on its timers; the last sync's record is left as it was.
        ``due_only``: a wakeup pass, for the resources that asked for it (a sensor's
        sample, a retry) and those depending on them; the others keep the status the
        last pass gave them, and are looked at again by the next sync or full pass.
        """
        only: set[str] | None = None
        if due_only:
            due = self.ctx.due(self.clock())
            only = None if None in due else {key for key in due if key is not None}
        with self._locked() as state:
            if state.applied:
                report = SyncReport("up-to-date", "InSync",
                                    f"spec {state.applied[:12]} applied")
            else:
                report = SyncReport("no-bundles", "NoSpec", "no spec has been applied yet")
            with self._history() as history:
                self.applier.apply(history, state, report, source, record_sync=False,
                                   only=only)
            return report

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
        with self._locked() as state:
            root = self._trust_root()
            own_remote = remote is None
            if own_remote and net.ssh_key == self.key_path:
                self.device_key()  # the hub knows us by it: it must exist before we connect
            remote = remote or open_remote(net)
            # One budget for the whole pass: the hub's reads end when the sync's time does,
            # and all the hub may send is one bundle's worth.
            budget = self._budget(max_bytes=self.config.limits.max_bundle_mib * 2**20)
            remote.arm(budget)
            try:
                with self._history() as history:
                    return self.hub.exchange(history, state, root, remote, budget)
            finally:
                if own_remote:
                    remote.close()

    def write_status_bundle(self, path: Path, hub_has: str | None = None, *,
                            dir_fd: int | None = None) -> bool:
        """Write ``status/<device>`` as a bundle the hub can fetch; False if none yet.

        Takes the state lock (waiting briefly: it follows a sync that has just let go
        of it); see ``sync.export.write_status_bundle``. With ``dir_fd``, ``path`` is a
        name in that open folder (the stick's pinned outbox).
        """
        from giter_agent.sync.export import write_status_bundle

        with state_lock(self.config.state_dir, wait_s=STATUS_BUNDLE_LOCK_WAIT_S,
                        owner=self.lock_owner):
            state = self.state_store.load()
            with self._history() as history:
                return write_status_bundle(history, state, self.config.status_ref, path,
                                           hub_has, dir_fd=dir_fd)

    def next_wakeup(self) -> float | None:
        """When the daemon should run ``reconcile_pass`` next (clock time), or None."""
        return self.ctx.next_wakeup()

    def close(self) -> None:
        self.ctx.close()


def refusal(exc: GiterError) -> str:
    """The one-line form of a refusal, as the CLI and the receipt print it."""
    return f"{exc.reason}: {exc}"
