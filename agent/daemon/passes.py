"""What runs the daemon's passes: the one dispatch of a job to the ``Agent``, and where.

``run_pass`` is the only place a job kind (network sync, USB stick, reconcile) turns
into an ``Agent`` call; whoever runs a pass calls it. ``Passes`` is what the loop
(``daemon.loop``) asks of the side that runs them, so the loop does not care where:

- ``InProcessPasses`` runs each pass in this process, with one ``Agent`` that lives as
  long as the daemon (tests; a daemon that holds pins and samplers, see
  ``daemon.worker_passes``);
- ``daemon.worker_passes.WorkerPasses`` runs each pass in a short-lived worker process
  (``daemon.worker``) that calls the same ``run_pass``, so the long-lived process never
  loads what a pass needs (dulwich, cryptography, YAML, the kinds).

Besides the pass itself, the loop reads three things that a pass changes: the remote
overrides of the agent's settings (the ``Agent`` kind), the earliest reconcile a
resource asked for, and how much longer than usual the running pass may take (a
Command's timeout, for the watchdog).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from giter_agent.core.errors import GiterError
from giter_agent.daemon.jobs import NETWORK, RECONCILE, USB, WAKEUP, Job

if TYPE_CHECKING:
    from giter_agent.config.agent_toml import Config
    from giter_agent.state.store import StateStore
    from giter_agent.status.report import SyncReport
    from giter_agent.sync.agent import Agent


def run_pass(agent: Agent, job: Job) -> SyncReport:
    """Run one job's pass with ``agent`` (it takes the state lock itself)."""
    if job.kind == NETWORK:
        return agent.sync_network()
    if job.kind == USB:
        from giter_agent.transport.usb import sync_stick

        return sync_stick(agent, Path(job.arg or ""))
    if job.kind == RECONCILE:
        # A resource's own wakeup visits the resources that are due; a pass for
        # another reason (the state changed under us) looks at every one.
        return agent.reconcile_pass(source=f"daemon:{job.reason}",
                                    due_only=job.reason == WAKEUP)
    raise GiterError(f"no such job kind {job.kind!r}", reason="UnknownJob")


class Passes(ABC):
    """The side that runs the daemon's passes (see the module docstring): each
    implementation gives the four abstract methods; ``abandon`` and ``close`` do
    nothing unless it holds something."""

    config: Config
    state_store: StateStore
    clock: Callable[[], float]  # wall-clock time, as resources' wakeups are kept

    @abstractmethod
    def run(self, job: Job) -> Any:
        """Run ``job``'s pass to its end; returns its ``SyncReport`` or raises."""

    @abstractmethod
    def overrides(self) -> dict[str, Any]:
        """The remote overrides of the agent's settings, as the last pass left them."""

    @abstractmethod
    def next_wakeup(self) -> float | None:
        """When a resource asked for its next reconcile (clock time), or None."""

    @abstractmethod
    def busy_allowance(self) -> float:
        """Seconds the running pass may take beyond the usual bound (``Context.allow_busy``)."""

    def abandon(self) -> None:
        """The daemon is exiting mid-pass: stop the pass now if it runs elsewhere
        (a pass in this process simply ends with it)."""
        return None

    def close(self) -> None:
        """Release what passes hold (pins, samplers); by default nothing."""
        return None


class InProcessPasses(Passes):
    """Every pass in this process, on one long-lived ``Agent``."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.config = agent.config
        self.state_store = agent.state_store
        self.clock = agent.clock

    def run(self, job: Job) -> Any:
        self.agent.ctx.busy_allowance = 0.0
        if job.run is not None:
            return job.run(self.agent)
        return run_pass(self.agent, job)

    def overrides(self) -> dict[str, Any]:
        return self.agent.ctx.settings

    def next_wakeup(self) -> float | None:
        return self.agent.next_wakeup()

    def busy_allowance(self) -> float:
        return self.agent.ctx.busy_allowance

    def close(self) -> None:
        self.agent.close()

