"""The daemon's pass worker: one pass in a short-lived process, then exit.

``giter-agent run`` starts ``python -m giter_agent.daemon.worker FD`` for each network
sync, USB stick or reconcile pass (``daemon.worker_passes``). The worker reads the
request (``daemon.worker_protocol``) on stdin, builds the ``Agent`` from the same
config, runs the pass with ``daemon.passes.run_pass`` (the code a one-process daemon
runs) and writes the outcome on descriptor ``FD``. Everything a pass loads - dulwich,
cryptography, YAML, the kinds - is freed when it exits. Outputs are the daemon's: the
worker sees the ones it holds and plans the calls it is to make on them
(``device.outputs.PlannedOutputs``).

It holds the state lock in the daemon's name, so recovery and a manual sync see the
daemon as the holder. It ignores SIGTERM, SIGINT, SIGHUP and SIGUSR1 (systemd signals
the whole service; the daemon decides when a pass is abandoned), and dies with the
daemon (``PR_SET_PDEATHSIG``): a pass never outlives the process that asked for it.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from giter_agent.core.errors import GiterError, WorkerError
from giter_agent.core.log import get_logger
from giter_agent.daemon.worker_protocol import Outcome, Request, busy_line

log = get_logger("giter.daemon")
_PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    """Be killed when the daemon goes (Linux); exit now if it is already gone."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the daemon kills us when it abandons
        pass
    if os.getppid() != parent:
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = int(args[0])
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)
    request = Request.decode(sys.stdin.buffer.read())
    _die_with(request.owner)

    from giter_agent.config.agent_toml import load
    from giter_agent.daemon import logs
    from giter_agent.daemon.passes import run_pass
    from giter_agent.device.outputs import PlannedOutputs, held_from_plain
    from giter_agent.sync.agent import Agent

    def write(line: bytes) -> None:
        os.write(out, line)

    outcome = Outcome()
    agent = None
    outputs = PlannedOutputs(held_from_plain(request.outputs), request.output_failures)
    try:
        config = load(Path(request.config))
        agent = Agent(config, lock_owner=request.owner, clean=request.clean)
        state_store = agent.state_store

        def current_spec() -> str | None:
            try:
                return state_store.load().applied
            except Exception:
                return None

        logs.setup(config.device_id, current_spec, level=request.level)
        agent.ctx.settings.update(request.settings)
        agent.ctx.restore_wakeups(request.wakeups)
        agent.ctx.outputs = outputs  # the daemon holds the pins: plan what it is to do
        agent.ctx.on_busy = lambda seconds: write(busy_line(seconds))
        outcome.report = run_pass(agent, request.job)
    except GiterError as exc:
        outcome.error = exc
    except Exception as exc:  # a bug: the traceback goes to the log, a line to the daemon
        log.error("the %s pass failed", request.job.kind, exc_info=True,
                  extra={"event": "worker-crashed"})
        outcome.error = WorkerError(f"{type(exc).__name__}: {exc}")
    if agent is not None:
        outcome.settings = dict(agent.ctx.settings)
        outcome.wakeups = agent.ctx.wakeups()
        outcome.clean = agent.clean
        outcome.holds = sorted(agent.ctx.devices)
        agent.close()
    outcome.plan = outputs.plan
    write(outcome.encode())
    return 0


if __name__ == "__main__":
    from giter_agent.core.lifetime import one_job

    sys.exit(one_job(main))
