"""The boot loader: the installed package starts the agent environment that is selected.

Called by ``cli.main`` before a command runs. The installed package (the Debian
package's ``/usr/bin/giter-agent``, or ``/opt/giter-agent``) stays the stable part: when
an ``AgentUpdate`` has selected another environment (``kinds.agent_envs``), the
commands that use the state directory are run from it (``exec``, same process id, so
systemd's notify socket and watchdog see the same service). A process started that way
carries ``GITER_AGENT_ENV`` and never boots again: no exec loop. Only the user that owns
the state directory runs an environment from it: root's ``giter-agent status`` on the
service's state runs the installed package's code, never code the service user wrote.

The update journal (``state.update_journal``) decides which environment runs. At the
start of a writing command (``run``, ``sync``, ``serve-serial``) this code - the
installed package's, never the new version's - ends a trial that failed: its deadline
passed, or the daemon was started in it ``MAX_TRIAL_STARTS`` times without a status
commit (a crash at start, the watchdog). It then records the rollback, selects the
previous environment again, and runs that. ``run`` counts each start of a trial, and
forks a guard (``guard``) that stays in the installed package's code while the new
version runs: if the deadline passes before the new version confirms, the guard rolls
back and kills the daemon (SIGKILL: ``Restart=on-failure`` starts it again, and a
power cut at that instant is survived as any other).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from giter_agent.core.log import flush as flush_logs
from giter_agent.core.log import get_logger
from giter_agent.state import agent_env
from giter_agent.state.agent_env import ENV_VAR, launch_argv, running_env
from giter_agent.state.update_journal import (
    FILE,
    TRIAL,
    UpdateJournal,
    expired,
    wanted,
)

if TYPE_CHECKING:  # loaded only when a start ends a trial: a plain start reads a link
    from giter_agent.kinds.agent_envs import AgentEnvs

log = get_logger("giter.boot")

# Commands that run in the selected environment; the first three may write (end a
# failed trial), and ``run`` counts its starts and guards the deadline.
BOOTED = ("run", "sync", "serve-serial", "status", "plan", "key", "--version")
WRITERS = ("run", "sync", "serve-serial")
GUARD_POLL_S = 5.0


def decide(state_dir: Path, clock: Callable[[], float], *, writes: bool, counts: bool
           ) -> tuple[str | None, dict[str, Any] | None]:
    """The environment to run (None: the installed package) and the trial it is on
    (None: none). With ``writes``, a failed trial is rolled back and the ``current``
    link is made to agree with the journal; with ``counts``, a start is counted."""
    journal = UpdateJournal(state_dir / FILE)
    entry = journal.entry()
    if writes and entry is not None and entry.get("phase") == TRIAL:
        why = expired(entry, clock())
        if why is not None:
            entry = roll_back(journal, _envs(state_dir), entry, why, clock)
        elif counts:
            entry = journal.count_start(entry)
    name = wanted(entry, agent_env.selected(state_dir))
    if name is not None and not agent_env.exists(state_dir, name):
        name = None  # removed by hand: the installed package runs
    if writes and name != agent_env.selected(state_dir):
        _envs(state_dir).select(name, clock())
    on_trial = entry if entry is not None and entry.get("phase") == TRIAL else None
    return name, on_trial


def _envs(state_dir: Path) -> AgentEnvs:
    from giter_agent.kinds.agent_envs import AgentEnvs

    return AgentEnvs(state_dir)


def roll_back(journal: UpdateJournal, envs: AgentEnvs, entry: dict[str, Any], why: str,
              clock: Callable[[], float]) -> dict[str, Any]:
    """End trial ``entry`` as failed: journal first, then the link back (durable)."""
    ended = journal.roll_back(entry, "UpdateRolledBack", why)
    envs.select(entry.get("previous"), clock())
    log.error("%s; rolled back to giter-agent %s", why, entry.get("previousVersion"),
              extra={"event": "agent-update", "reason": "UpdateRolledBack"})
    return ended


def guard(state_dir: Path, env: str, parent: int, *, clock: Callable[[], float],
          sleep: Callable[[float], None], alive: Callable[[int], bool],
          kill: Callable[[int, int], None], poll: float = GUARD_POLL_S) -> str:
    """Watch the trial of ``env`` while process ``parent`` runs it; what ended the
    watch: ``confirmed`` (or another update), ``gone`` (the daemon ended), or
    ``rolled-back`` (the deadline passed: rolled back, ``parent`` killed)."""
    journal = UpdateJournal(state_dir / FILE)
    while True:
        entry = journal.entry()
        if entry is None or entry.get("phase") != TRIAL or entry.get("env") != env:
            return "confirmed"
        if not alive(parent):
            return "gone"
        now = clock()
        why = expired({**entry, "starts": 0}, now)
        if why is not None:
            roll_back(journal, _envs(state_dir), entry, why, clock)
            import signal  # the guard's, not every start's: 1 ms of enum set-up

            kill(parent, signal.SIGKILL)
            return "rolled-back"
        sleep(max(0.0, min(poll, float(entry["deadline"]) - now)))


def restart_reason(state_dir: Path) -> str | None:
    """Why this daemon should stop for systemd to start another environment (the one
    the journal selects is not the one it runs), or None."""
    try:
        name = wanted(UpdateJournal(state_dir / FILE).entry(), agent_env.selected(state_dir))
        if name is not None and not agent_env.exists(state_dir, name):
            name = None
    except OSError:
        return None
    if name == running_env():
        return None
    return f"agent environment {name or 'of the installed package'} is selected"


def on_trial(state_dir: Path) -> bool:
    """Does this process run an update on trial (it has a status commit to write)?"""
    try:
        entry = UpdateJournal(state_dir / FILE).trial()
    except OSError:
        return False
    return entry is not None and entry.get("env") == running_env()


def _alive(pid: int) -> bool:
    return os.getppid() == pid


def _fork_guard(state_dir: Path, env: str) -> None:
    parent = os.getpid()
    if os.fork() != 0:
        return
    # The guard: the installed package's code, already loaded; it never returns.
    code = 0
    try:
        import signal

        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        guard(state_dir, env, parent, clock=time.time, sleep=time.sleep, alive=_alive,
              kill=os.kill)
    except BaseException:
        code = 1
    os._exit(code)


def boot(args: argparse.Namespace, argv: Sequence[str] | None) -> None:
    """Exec the selected environment for ``args.command`` if there is one; return to
    run the installed package's own code otherwise (or when anything is unreadable:
    the command then reports what is wrong itself)."""
    command = getattr(args, "command", None)
    if running_env() is not None or command not in BOOTED:
        return
    from giter_agent.config.agent_toml import load

    try:
        config = load(args.config)
    except Exception:
        return
    try:
        if config.state_dir.stat().st_uid != os.geteuid():
            # Another user's state directory (root's `giter-agent status` on the
            # service's): never run code that user could have written; the installed
            # package's own code runs, reading only.
            return
    except OSError:
        return  # no state directory yet: nothing was ever selected
    try:
        name, trial = decide(config.state_dir, time.time, writes=command in WRITERS,
                             counts=command == "run")
    except OSError as exc:
        log.warning("cannot read the agent update state in %s: %s", config.state_dir, exc)
        return
    if name is None:
        return
    if command == "run" and trial is not None and trial.get("env") == name:
        _fork_guard(config.state_dir, name)
    line = list(sys.argv[1:] if argv is None else argv)
    argv_full = launch_argv(agent_env.lib(config.state_dir, name), line)
    flush_logs()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv_full[0], argv_full, {**os.environ, ENV_VAR: name})
