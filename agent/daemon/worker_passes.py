"""Passes in a short-lived worker process, so the daemon itself stays small.

``giter-agent run`` keeps in its own process only what must live: the loop and its
triggers, systemd's notifications and watchdog, the status LED, the serial console.
Each network sync, USB stick and reconcile pass runs in a worker process
(``daemon.worker``) that loads what the pass needs and exits; the daemon keeps, from
one pass to the next, what the worker hands back (``daemon.worker_protocol``): the
remote settings, the wakeups resources asked for, whether the last pass ended cleanly.

What cannot die with a worker stays here. Outputs (a blink, a PWM level: gpiozero's
threads) are held by this process's ``HeldOutputs``: the worker is told what it holds,
and plans its calls (``device.outputs``), which this process makes when the worker is
done. A resource with another live device (a Sensor summarising its samples) is named
by the worker (``holds``); the daemon then builds its own ``Agent`` (sharing its board,
pin factory and outputs), reconciles at once so it holds the device, and runs every
pass in this process while it holds any (``InProcessPasses``'s way: the same
``run_pass``). A job that brings its own pass (a serial peer's sync, ``Job.run``) runs
here too, on the same ``Agent``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from giter_agent.core.errors import LockedError, WorkerError
from giter_agent.daemon.jobs import RECONCILE, Job
from giter_agent.daemon.passes import Passes, run_pass
from giter_agent.daemon.worker_protocol import WORKER_MODULE, Outcome, Request
from giter_agent.device.outputs import HeldOutputs, held_to_plain
from giter_agent.state.store import StateStore

if TYPE_CHECKING:
    from giter_agent.config.agent_toml import Config
    from giter_agent.device.board import Board
    from giter_agent.sync.agent import Agent

log = logging.getLogger("giter.daemon")
ANSWER_FD = 3  # the worker's descriptor for its answers
HOLD = "hold"  # the reason of the reconcile that takes over what a worker named
# What the worker must not inherit: the daemon alone speaks to systemd.
_PARENT_ONLY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS",
                    "LISTEN_PID")


def worker_environ() -> dict[str, str]:
    """The environment a pass worker starts with: this daemon's, less what only the
    daemon may use (systemd's sockets), and this daemon's import path as
    ``PYTHONPATH``, so the worker runs the very code the daemon runs. The path is not
    the interpreter's own: the Debian package's launcher puts its private folder
    (``/usr/share/giter-agent``: the agent and the libraries it bundles) first, and the
    boot loader an ``AgentUpdate``'s environment (``cli.boot``); a worker started with
    the interpreter's path would find no agent, or the installed package's version."""
    env = {k: v for k, v in os.environ.items() if k not in _PARENT_ONLY_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


class WorkerPasses(Passes):
    """Runs each pass in a worker process, or here while this process holds pins."""

    def __init__(self, config: Config, config_path: Path, *, board: Board,
                 pin_factory: Callable[[], Any], clock: Callable[[], float] = time.time,
                 python: str = sys.executable) -> None:
        self.config = config
        self.config_path = Path(config_path).resolve()
        self.state_store = StateStore(config.state_dir)
        self.clock = clock
        self.board = board
        self.pin_factory = pin_factory
        self.python = python
        self.outputs = HeldOutputs(pin_factory)
        self._settings: dict[str, Any] = {}
        self._wakeups: list[tuple[str | None, float]] = []
        self._clean = False
        self._busy = 0.0
        self._agent: Agent | None = None
        self._pid: int | None = None  # the running worker's

    # -- what the loop reads -------------------------------------------------------------
    # What passes keep between them lives here until this process has an ``Agent``, then
    # in its context (a serial peer's sync, on the serial thread, changes it there).
    def overrides(self) -> dict[str, Any]:
        return self._agent.ctx.settings if self._agent is not None else self._settings

    def next_wakeup(self) -> float | None:
        if self._agent is not None:
            return self._agent.next_wakeup()
        return min((at for _, at in self._wakeups), default=None)

    def _kept(self) -> tuple[dict[str, Any], list[tuple[str | None, float]]]:
        if self._agent is not None:
            ctx = self._agent.ctx
            return dict(ctx.settings), ctx.wakeups()
        return self._settings, self._wakeups

    def _keep(self, settings: dict[str, Any], wakeups: list[tuple[str | None, float]],
              clean: bool) -> None:
        # ``clean`` is about the passes the loop ran (a worker's, or one here on the pass
        # thread), read when they are over: never the Agent's own flag, which a serial
        # peer's sync on the serial thread clears while it runs. A failure is passed on
        # to that Agent too, so its next pass sweeps as well.
        self._settings, self._wakeups, self._clean = settings, wakeups, clean
        if self._agent is not None:
            ctx = self._agent.ctx
            ctx.settings.clear()
            ctx.settings.update(settings)
            ctx.restore_wakeups(wakeups)
            if not clean:
                self._agent.clean = False

    def busy_allowance(self) -> float:
        return self._busy

    # -- running a pass ------------------------------------------------------------------
    def agent(self) -> Agent:
        """This process's ``Agent`` (built on first use: pins to hold, a serial peer)."""
        if self._agent is None:
            from giter_agent.sync.agent import Agent

            factory = self.pin_factory
            agent = Agent(self.config, board=self.board, clock=self.clock,
                          pin_factory_maker=lambda _board: factory())
            agent.ctx.outputs = self.outputs
            agent.clean = self._clean
            settings, wakeups = self._kept()
            self._agent = agent
            self._keep(settings, wakeups, self._clean)
        return self._agent

    def holding(self) -> bool:
        """Does this process hold a resource's live device (pins, a sampler)?"""
        return self._agent is not None and bool(self._agent.ctx.devices)

    def run(self, job: Job) -> Any:
        self._busy = 0.0
        if job.run is not None or self.holding():
            return self._here(job)
        outcome = self._spawn(job)
        self.outputs.replay(outcome.plan)  # done by the worker's lights: done, here
        if isinstance(outcome.error, LockedError):
            raise outcome.error  # it never ran: what passes keep is as it was
        self._keep(outcome.settings, outcome.wakeups, outcome.clean)
        if outcome.holds:  # even after a refusal: the applied spec was reconciled
            log.info("holding %s in the daemon from now on", ", ".join(outcome.holds),
                     extra={"event": "hold"})
            self._here(Job(RECONCILE, reason=HOLD))
        if outcome.error is not None:
            raise outcome.error
        return outcome.report

    def _here(self, job: Job) -> Any:
        """Run ``job`` in this process, on its ``Agent`` (which keeps what passes keep)."""
        agent = self.agent()
        ctx = agent.ctx
        ctx.busy_allowance = 0.0
        ctx.on_busy = self._note_busy
        try:
            return job.run(agent) if job.run is not None else run_pass(agent, job)
        finally:
            ctx.on_busy = None
            self._clean = agent.clean

    def _note_busy(self, seconds: float) -> None:
        self._busy = seconds

    def _spawn(self, job: Job) -> Outcome:
        """Run ``job`` in a worker process and read its answer."""
        settings, wakeups = self._kept()
        request = Request(config=str(self.config_path), job=job, owner=os.getpid(),
                          level=logging.getLogger().getEffectiveLevel(), clean=self._clean,
                          settings=settings, wakeups=wakeups,
                          outputs=held_to_plain(self.outputs.snapshot()),
                          output_failures=dict(self.outputs.failures))
        read_fd, pid = self._start_worker(request.encode())
        last: dict[str, Any] | None = None
        with os.fdopen(read_fd, "rb") as answers:
            for line in answers:
                with contextlib.suppress(ValueError):
                    message = json.loads(line)
                    if "busy" in message:
                        self._busy = float(message["busy"])
                    else:
                        last = message
        _, status, usage = os.wait4(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        self._pid = None
        log.debug("pass worker %d exited (%d)", pid, code,
                  extra={"event": "worker-exit",
                         "worker_peak_mib": f"{usage.ru_maxrss / 1024:.1f}"})
        if last is None:
            self._keep(settings, wakeups, False)  # it may have died mid-write: sweep next
            raise WorkerError(f"the pass worker (pid {pid}) ended without an answer "
                              f"(exit status {code}); the next pass resumes "
                              "from the state file")
        return Outcome.decode(last)

    def _start_worker(self, request: bytes) -> tuple[int, int]:
        """Start ``python -m giter_agent.daemon.worker 3`` with ``request`` on its stdin,
        stdout on /dev/null, stderr shared, and descriptor 3 the write end of a pipe for
        its answers; returns the read end and the worker's pid.

        ``os.posix_spawn``, not ``subprocess``: the module and what it brings would stay
        in the idle daemon for this one call (docs/performance.md, "The idle daemon").
        As ``subprocess`` does, the child gets SIGPIPE and SIGXFSZ back at their default
        and no descriptor but these (Python opens every other one close-on-exec)."""
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
        write_fd, stdin_r = _above_answer_fd(write_fd), _above_answer_fd(stdin_r)
        try:
            # dup2 onto another number gives the copy without close-on-exec.
            self._pid = pid = os.posix_spawn(
                self.python, [self.python, "-m", WORKER_MODULE, str(ANSWER_FD)],
                worker_environ(),
                file_actions=[(os.POSIX_SPAWN_DUP2, stdin_r, 0),
                              (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                              (os.POSIX_SPAWN_DUP2, write_fd, ANSWER_FD)],
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
        except OSError as exc:
            for fd in (read_fd, write_fd, stdin_r, stdin_w):
                os.close(fd)
            raise WorkerError(f"cannot start the pass worker ({self.python}): "
                              f"{exc.strerror or exc}") from None
        os.close(write_fd)
        os.close(stdin_r)
        with os.fdopen(stdin_w, "wb") as stdin, contextlib.suppress(BrokenPipeError):
            stdin.write(request)
        return read_fd, pid

    def abandon(self) -> None:
        """Kill a running worker now, as a power cut would (every step survives one)."""
        pid = self._pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        if self._agent is not None:
            self._agent.close()
        self.outputs.close_all()


def _above_answer_fd(fd: int) -> int:
    """``fd``, or a copy numbered above ``ANSWER_FD`` (the original closed). The child's
    descriptors 0 to 3 are made from these in turn: a pipe end numbered 0, 1 or 3 (a
    daemon started with stdin or stdout closed gets such numbers from ``pipe2``) would
    be replaced by another before its turn, or keep close-on-exec on a dup2 onto its
    own number."""
    low = []
    while fd <= ANSWER_FD:
        low.append(fd)
        fd = os.dup(fd)  # close-on-exec, the lowest free number: climbs past the low ones
    for old in low:
        os.close(old)
    return fd


class DaemonDevice:
    """The device as the serial console sees it (``transport.device.SyncingDevice``) in
    a daemon whose passes run in workers: the config, board, state and clock at once,
    the ``Agent`` (the sync path) only when a serial peer syncs or asks for the key."""

    def __init__(self, passes: WorkerPasses) -> None:
        self.passes = passes
        self.config = passes.config
        self.board = passes.board
        self.state_store = passes.state_store
        self.clock = passes.clock

    def sync(self, bundles: list[Path], source: str) -> Any:
        return self.passes.agent().sync(bundles, source)

    def write_status_bundle(self, path: Path, hub_has: str | None = None, *,
                            dir_fd: int | None = None) -> bool:
        return self.passes.agent().write_status_bundle(path, hub_has, dir_fd=dir_fd)

    def public_key_line(self) -> str:
        return self.passes.agent().public_key_line()

    def enrolled(self) -> bool:
        return self.passes.agent().enrolled()

