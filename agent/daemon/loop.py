"""``giter-agent run``: one loop that sleeps until a trigger is due, then runs a pass.

The main thread owns the loop: it blocks in ``poll()`` on every trigger's descriptors
(``daemon.triggers``), on a wake-up pipe (signals, finished passes) and nothing else,
with a timeout that ends at the earliest due trigger or watchdog ping. Idle is idle:
no trigger due means no wake-up. Passes (network sync, USB stick, reconcile) run one
at a time, handed from a worker thread to whatever runs them (``daemon.passes``: in
this process, or ``giter-agent run``'s short-lived worker process), so the loop keeps
answering systemd's watchdog and SIGTERM while a fetch takes its time.

Each pass takes the state directory's lock and gives it back when it ends, so a
manual ``giter-agent sync`` runs between passes; a pass that finds the lock taken
waits for it (a few seconds, then tries again), and a manual sync that finds the
daemon mid-pass gets a message naming the daemon's pid. When another process changed
the state file, the daemon reconciles at once so the outputs it drives follow.

On SIGTERM it stops taking jobs, tells systemd STOPPING=1, and lets a running pass
finish for up to ``grace_s``. A pass still running then is abandoned by exiting (a
worker process is killed first): every step of a pass is written so that a power cut
at any instant resumes cleanly (state file replaced atomically, refs repaired from it,
quarantines swept), and an exit is no worse. SIGUSR1 asks for a network sync now. After
a pass that selected another version of the agent (``AgentUpdate``), it stops the same
way and exits ``EXIT_RESTART`` (75), for systemd to start the selected version
(``cli.boot``).

A trigger may also be a service with a thread of its own (``SerialService``: the serial
console and sync protocol); the daemon starts and closes it, counts it ``syncing``
while its ``busy()`` says so, tells it when the health changes (``status_changed``),
and hands it the USB stick's news (``notice``: syncing, the result, SAFE TO REMOVE)
so a technician on the serial console sees what a stick did.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from giter_agent.core.durable import mkdir_durable
from giter_agent.core.errors import GiterError, LockedError
from giter_agent.daemon import heap
from giter_agent.daemon.backoff import Backoff
from giter_agent.daemon.passes import InProcessPasses, Passes
from giter_agent.daemon.sd_notify import Notifier
from giter_agent.daemon.triggers import (
    NETWORK,
    PRIORITY,
    RECONCILE,
    USB,
    Job,
    StateWatch,
    SyncTimer,
    UsbWatch,
    WakeupTimer,
    identity,
)
from giter_agent.state.health import Health, health
from giter_agent.status.report import EXIT_RESTART
from giter_agent.sync.bounds import max_pass_s

if TYPE_CHECKING:
    from giter_agent.sync.agent import Agent

log = logging.getLogger("giter.daemon")
T = TypeVar("T")


class _Empty(Exception):
    """Nothing came in time."""


class _Mailbox(Generic[T]):
    """First in, first out, between the loop and the pass thread: the three calls of
    ``queue.Queue`` the loop makes, without importing ``queue`` (and ``heapq``) into
    the idle daemon for them (docs/performance.md, "The idle daemon")."""

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._ready = threading.Condition()

    def put(self, item: T) -> None:
        with self._ready:
            self._items.append(item)
            self._ready.notify()

    def get(self, timeout: float | None = None) -> T:
        """The oldest item, waiting for one up to ``timeout`` (None: for ever)."""
        with self._ready:
            if not self._ready.wait_for(lambda: self._items, timeout):
                raise _Empty
            return self._items.popleft()

    def get_nowait(self) -> T:
        return self.get(timeout=0)


class _Pending:
    """A job waiting to run, the trigger that asked, and when it may run."""

    __slots__ = ("job", "not_before", "trigger")

    def __init__(self, job: Job, trigger: Any, not_before: float) -> None:
        self.job = job
        self.trigger = trigger
        self.not_before = not_before


class Daemon:
    """The loop around what runs the passes: an ``Agent`` (each pass in this process)
    or any ``Passes``. ``add_trigger`` before ``run`` adds sources."""

    def __init__(self, agent: Agent | Passes, *, notifier: Notifier | None = None,
                 rng: random.Random | None = None,
                 on_health: Callable[[Health], None] | None = None,
                 grace_s: float = 0.6, lock_retry_s: float = 2.0,
                 log_level: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 restart_wanted: Callable[[], str | None] | None = None) -> None:
        """``restart_wanted``: asked after every pass; a reason (another version of the
        agent is selected) ends the daemon with ``EXIT_RESTART`` for systemd to start
        the selected one."""
        self.passes = agent if isinstance(agent, Passes) else InProcessPasses(agent)
        self.restart_wanted = restart_wanted
        self._exit_code = 0
        self.log_level = log_level  # fixed (-v), or None: the log_level setting decides
        self.notifier = notifier or Notifier(None)
        self.on_health = on_health
        self.grace_s = grace_s
        self.lock_retry_s = lock_retry_s
        self.clock = clock
        self.rng = rng or random.Random()
        config = self.passes.config
        net = config.network
        # Longest a pass may honestly take; past that the watchdog is no longer fed.
        self.max_pass_s = max_pass_s(config)
        self._idle = threading.Event()  # set while no pass runs
        self._idle.set()
        self.triggers: list[Any] = []
        self._wakeups = WakeupTimer(self.passes.next_wakeup, wall=self.passes.clock)
        self._own_state: tuple[int, int] | None = identity(self._state_file)
        self.sync_timer: SyncTimer | None = None
        if net is not None:
            hub = self.passes.state_store.load().network
            failures = hub.failures if hub else 0
            self.sync_timer = SyncTimer(self._sync_interval,
                                        Backoff(max_s=net.backoff_max_s), self.rng,
                                        failures=failures, now=clock())
            self.triggers.append(self.sync_timer)
        if config.usb_roots:
            self.triggers.append(UsbWatch(config.usb_roots, say=self._say))
        self.triggers.append(self._wakeups)
        mkdir_durable(config.state_dir, mode=0o700)
        self.triggers.append(StateWatch(config.state_dir, lambda: self._own_state,
                                        lambda: not self._idle.is_set()))
        self._pending: list[_Pending] = []
        self._running: _Pending | None = None
        self._started_at = 0.0
        self._jobs: _Mailbox[_Pending | None] = _Mailbox()
        self._done: _Mailbox[tuple[_Pending, Any, BaseException | None]] = _Mailbox()
        self._stop = False
        self._sync_requested = False
        self._failure: str | None = None
        self._health: Health | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    @property
    def _state_file(self) -> Path:
        return self.passes.config.state_dir / StateWatch.FILE

    def settings(self) -> Any:
        """The settings in force now: ``[agent]`` defaults with the publisher's overrides
        (the Agent kind), read afresh after every pass. The one place the daemon asks."""
        from giter_agent.config.settings import effective

        return effective(self.passes.config, self.passes.overrides())

    def _sync_interval(self) -> float:
        return self.settings().sync_interval

    def _apply_log_level(self) -> None:
        if self.log_level is None:  # not fixed on the command line
            level = getattr(logging, self.settings().log_level.upper(), logging.WARNING)
            logging.getLogger().setLevel(level)

    def add_trigger(self, trigger: Any) -> None:
        """Add a trigger (see ``daemon.triggers`` for what it must offer, and the module
        docstring for a service's extras)."""
        self.triggers.append(trigger)

    def wake(self) -> None:
        """Look again now (thread-safe): a service's ``busy()`` changed, say."""
        self._wake()

    # -- what it tells people -----------------------------------------------------------
    def health(self) -> Health:
        """The agent's state in one word (``state.health``), as of now."""
        try:
            state = self.passes.state_store.load()
        except GiterError as exc:
            return Health("error", exc.reason, str(exc))
        return health(state, syncing=not self._idle.is_set() or self._service_busy(),
                      failure=self._failure)

    def _service_busy(self) -> bool:
        return any(getattr(t, "busy", lambda: False)() for t in self.triggers)

    def _publish_health(self) -> None:
        now = self.health()
        if now != self._health:
            self._health = now
            self.notifier.status(now.line()[:200])
            if self.on_health is not None:
                self.on_health(now)
        # The console's status line also names the last sync: it looks whenever a pass
        # began or ended, and prints only what changed.
        for trigger in self.triggers:
            changed = getattr(trigger, "status_changed", None)
            if changed is not None:
                changed()

    def _say(self, line: str) -> None:
        """News for a person at the board (the serial console), and for the log."""
        for trigger in self.triggers:
            notice = getattr(trigger, "notice", None)
            if notice is not None:
                notice(line)

    # -- signals ------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop = True
        self._wake()

    def sync_now(self) -> None:
        self._sync_requested = True
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"w")

    def _install_signals(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        for sig, handler in ((signal.SIGTERM, lambda *_: self.request_stop()),
                             (signal.SIGINT, lambda *_: self.request_stop()),
                             (signal.SIGUSR1, lambda *_: self.sync_now())):
            previous[sig] = signal.signal(sig, handler)
        # A signal arriving while poll() sleeps writes here, so poll() returns at once.
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        return previous

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (or ``request_stop``); returns the exit code."""
        previous = self._install_signals()
        self._apply_log_level()
        worker = threading.Thread(target=self._worker, name="giter-pass", daemon=True)
        worker.start()
        poller = select.poll()
        owners: dict[int, Any] = {}
        poller.register(self._wake_r, select.POLLIN)
        for trigger in self.triggers:
            start = getattr(trigger, "start", None)
            if start is not None:
                start()
        for trigger in self.triggers:
            for fd, mask in trigger.fds():
                poller.register(fd, mask)
                owners[fd] = trigger
        interval = self.notifier.watchdog_interval
        next_ping = self.clock()
        cfg = self.passes.config
        log.info("daemon started (network: %s, USB roots: %s)",
                 cfg.network.url if cfg.network else "none",
                 ", ".join(map(str, cfg.usb_roots)) or "none", extra={"event": "started"})
        self._publish_health()
        self.notifier.ready(self._health.line()[:200] if self._health else None)
        while not self._stop:
            now = self.clock()
            self._collect(now)
            if self._sync_requested and self.sync_timer is not None:
                self._sync_requested = False
                self.sync_timer.poke(now)
            for trigger in self.triggers:
                due = trigger.next_due(now)
                if due is not None and due <= now:
                    self._queue(trigger.fire(now, set()), trigger, now)
            self._dispatch(now)
            if interval is not None and now >= next_ping:
                if self._may_feed(now):
                    self.notifier.watchdog()
                else:
                    log.error("a %s pass has run for %.0f s; no longer feeding the watchdog",
                              self._running.job.kind if self._running else "?",
                              now - self._started_at, extra={"event": "stuck"})
                next_ping = now + interval
            timeout = self._timeout(now, next_ping if interval is not None else None)
            ready = poller.poll(None if timeout is None else max(0, int(timeout * 1000) + 1))
            now = self.clock()
            fired: dict[int, set[int]] = {}
            for fd, _events in ready:
                if fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self._wake_r, 512):
                            pass
                    if self._idle.is_set():
                        self._publish_health()  # a service may have started or ended a sync
                elif fd in owners:
                    fired.setdefault(id(owners[fd]), set()).add(fd)
            for trigger in self.triggers:
                if id(trigger) in fired:
                    self._queue(trigger.fire(now, fired[id(trigger)]), trigger, now)
        code = self._shutdown(worker)
        signal.set_wakeup_fd(-1)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(self._wake_r)
        os.close(self._wake_w)
        return code

    def _may_feed(self, now: float) -> bool:
        """Feed systemd's watchdog: idle, or a pass within its bound. The bound grows
        while a kind runs something bounded of its own (a Command up to its timeout),
        so a long command does not get the daemon killed and the command run again."""
        bound = self.max_pass_s + self.passes.busy_allowance()
        return self._idle.is_set() or now - self._started_at < bound

    def _timeout(self, now: float, next_ping: float | None) -> float | None:
        dues = [t.next_due(now) for t in self.triggers]
        if self._idle.is_set():
            dues += [p.not_before for p in self._pending]
        dues.append(next_ping)
        known = [d for d in dues if d is not None]
        return max(0.0, min(known) - now) if known else None

    def _queue(self, jobs: list[Job], trigger: Any, now: float) -> None:
        for job in jobs:
            same = [p for p in self._pending if (p.job.kind, p.job.arg) == (job.kind, job.arg)]
            if not same:
                self._pending.append(_Pending(job, trigger, now))

    def _dispatch(self, now: float) -> None:
        if not self._idle.is_set() or self._stop:
            return
        ready = [p for p in self._pending if p.not_before <= now]
        if not ready:
            return
        chosen = min(ready, key=lambda p: PRIORITY.get(p.job.kind, 9))
        self._pending.remove(chosen)
        if chosen.job.kind in (USB, NETWORK):
            # A sync reconciles too: waiting reconcile requests are answered by it (their
            # triggers schedule nothing on completion; wakeups are refreshed after it).
            self._pending = [p for p in self._pending if p.job.kind != RECONCILE]
        self._running = chosen
        self._started_at = now
        if chosen.job.kind == USB:
            self._say(f"USB stick {Path(chosen.job.arg or '').name}: syncing, leave it in")
        self._idle.clear()
        self._publish_health()
        self._jobs.put(chosen)

    def _worker(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            report, error = None, None
            try:
                report = self._execute(item.job)
            except BaseException as exc:  # reported by the loop; the worker lives on
                error = exc
            self._done.put((item, report, error))
            self._wake()

    def _execute(self, job: Job) -> Any:
        return self.passes.run(job)

    def _collect(self, now: float) -> None:
        while True:
            try:
                item, report, error = self._done.get_nowait()
            except _Empty:
                return
            self._running = None
            if isinstance(error, LockedError):
                log.info("%s; trying again in %.0f s", error, self.lock_retry_s,
                         extra={"event": "busy", "reason": error.reason})
                item.not_before = now + self.lock_retry_s
                self._pending.append(item)
            elif error is not None:
                reason = getattr(error, "reason", type(error).__name__)
                self._failure = f"{item.job.kind} pass failed: {reason}: {error}"
                log.error("%s", self._failure, extra={"event": "pass-failed", "reason": reason},
                          exc_info=not isinstance(error, GiterError))
                if item.job.kind == USB:
                    self._say(f"USB stick {Path(item.job.arg or '').name}: sync failed: "
                              f"{reason}; wait for SAFE TO REMOVE")
                item.trigger.finished(item.job, None, now)
            else:
                self._failure = None
                self._log_report(item.job, report)
                if item.job.kind == USB:
                    self._say(f"USB stick {Path(item.job.arg or '').name}: {report.outcome}: "
                              f"{report.message}; receipt written, wait for SAFE TO REMOVE")
                item.trigger.finished(item.job, report, now)
            self._own_state = identity(self._state_file)
            self._check_restart()
            self._wakeups.refresh(now)
            self._apply_log_level()
            self._idle.set()
            self._publish_health()
            heap.release()  # what the pass used, back to the system (daemon.heap)

    def _check_restart(self) -> None:
        why = self.restart_wanted() if self.restart_wanted is not None else None
        if why and not self._stop:
            log.warning("%s: stopping for systemd to start it (exit %d)", why, EXIT_RESTART,
                        extra={"event": "restart", "reason": "AgentUpdated"})
            self._exit_code = EXIT_RESTART
            self._stop = True
            self._wake()  # the loop may be about to sleep in poll() with nothing due

    def pass_now(self) -> None:
        """Run a reconcile pass as soon as the loop starts (an update of the agent on
        trial: the new version has a status commit to write)."""
        self._queue([Job(RECONCILE, reason="agent-trial")], self._wakeups, self.clock())

    def _log_report(self, job: Job, report: Any) -> None:
        quiet = report.outcome in ("up-to-date", "applied") and not report.not_ready
        level = logging.INFO if quiet else logging.WARNING
        log.log(level, "%s pass (%s): %s: %s", job.kind, job.reason, report.outcome,
                report.message, extra={"event": report.outcome, "reason": report.reason,
                                       "spec": report.applied})

    def _shutdown(self, worker: threading.Thread) -> int:
        self.notifier.stopping("stopping")
        log.info("stopping", extra={"event": "stopping"})
        if not self._idle.is_set():
            # Only this thread sets _idle (in _collect): wait for the worker's answer here.
            try:
                self._done.put(self._done.get(timeout=self.grace_s))
                self._collect(self.clock())
            except _Empty:
                pass
        if not self._idle.is_set():
            job = self._running.job.kind if self._running else "current"
            log.warning("abandoning the %s pass to stop in time; the next start resumes "
                        "from the state file", job, extra={"event": "abandoned"})
            for handler in logging.getLogger().handlers:
                handler.flush()
            sys.stderr.flush()
            self.passes.abandon()
            os._exit(0)  # as a power cut would, which every step of a pass survives
        self._jobs.put(None)
        worker.join(1.0)
        for trigger in self.triggers:
            close = getattr(trigger, "close", None)
            if close is not None:
                close()
        self.passes.close()
        self.notifier.close()
        return self._exit_code
