"""A Command is never started twice: not after the agent is killed while it runs, and
not because systemd's watchdog killed a daemon that waited for it.

The agent runs for real (``giter-agent sync`` as a process, the daemon loop in this
process); the command is a shell script that counts its own starts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from giter_agent.config.agent_toml import load
from giter_agent.daemon.loop import Daemon
from giter_agent.daemon.sd_notify import Notifier
from giter_agent.daemon.triggers import Job
from giter_agent.state.store import StateStore
from giter_agent.sync.agent import Agent

API = "apiVersion: giter.dev/v1alpha1\n"


def command_doc(timeout: int = 600) -> str:
    return (f"{API}kind: Command\nmetadata: {{name: job, generation: 1}}\n"
            f"spec: {{command: job, timeout: {timeout}}}\n")


def board(tmp_path: Path, publisher, script: str, timeout: int = 600) -> tuple[Path, Path]:
    """A device whose allowlisted command ``job`` runs ``script``; its signed bundle."""
    (tmp_path / "root").mkdir()
    config = tmp_path / "agent.toml"
    config.write_text(
        'device_id = "pi-01"\nstate_dir = "state"\nboard = "generic-mock"\n'
        f'allowed_signers = "{publisher.allowed_signers}"\n'
        f'[files]\nroots = ["{tmp_path / "root"}"]\n'
        "[limits]\ntime_budget_s = 1\n"
        f'[commands]\nallowed = {{ job = ["/bin/sh", "-c", {json.dumps(script)}] }}\n')
    publisher.commit("a command", files={"devices/pi-01/job.yaml": command_doc(timeout)})
    return config, publisher.bundle(tmp_path / "fleet.bundle")


def wait_for(predicate, what: str) -> None:
    for _ in range(6000):
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def test_an_agent_killed_while_its_command_runs_does_not_run_it_again(tmp_path, publisher):
    starts, pidfile = tmp_path / "starts", tmp_path / "command.pid"
    # The first start hangs (the agent is killed meanwhile); any later start is quick.
    script = (f'echo start >> {starts}; echo $$ > {pidfile}; '
              f'[ "$(wc -l < {starts})" -gt 1 ] || sleep 600')
    config, bundle = board(tmp_path, publisher, script)
    argv = [sys.executable, "-m", "giter_agent", "-c", str(config), "sync", "--bundle",
            str(bundle)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), "the command")
        proc.kill()  # a power cut, the watchdog, the OOM killer
        proc.wait()
    finally:
        if pidfile.exists() and pidfile.read_text().strip():
            os.killpg(int(pidfile.read_text()), signal.SIGKILL)  # its own session
    assert starts.read_text() == "start\n"

    again = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert again.returncode == 3, again.stderr  # applied; the command is not Ready
    assert starts.read_text() == "start\n"  # not started a second time
    record = StateStore(tmp_path / "state").load().resources["Command/job"]
    cond = record.status["conditions"][0]
    assert (cond["status"], cond["reason"]) == ("False", "CommandInterrupted")
    assert "not run again" in cond["message"]
    # The state file holds the verdict now; a third pass repeats it and runs nothing.
    subprocess.run(argv, capture_output=True, check=False)
    assert starts.read_text() == "start\n"
    assert not (tmp_path / "state" / "commands.journal").exists()


class Watchdog(Notifier):
    """systemd's side of the watchdog, recording whether each ping came mid-pass."""

    def __init__(self, daemon_box: list[Any]) -> None:
        super().__init__("@unused", watchdog_usec=2_000_000)  # a ping every 1 s (fake)
        self.box = daemon_box
        self.mid_pass: list[float] = []

    def notify(self, **fields: str) -> bool:
        if fields.get("WATCHDOG") == "1" and self.box:
            daemon = self.box[0]
            if not daemon._idle.is_set():
                self.mid_pass.append(daemon.clock() - daemon._started_at)
        return True


class OnePass:
    """A trigger that runs one sync of ``bundle`` at once, then stops the daemon."""

    def __init__(self, bundle: Path, box: list[Any]) -> None:
        self.bundle, self.box, self.fired = bundle, box, False

    def fds(self) -> list:
        return []

    def next_due(self, now: float) -> float | None:
        return None if self.fired else now

    def fire(self, now: float, fds: set[int]) -> list[Job]:
        self.fired = True
        return [Job("test", reason="test",
                    run=lambda agent: agent.sync([self.bundle], source="test"))]

    def finished(self, job: Job, report: Any, now: float) -> None:
        self.box[0].request_stop()


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="the daemon installs signal handlers: main thread only")
def test_the_watchdog_is_fed_while_an_allowed_command_outlasts_the_pass_bound(
        tmp_path, publisher):
    starts = tmp_path / "starts"
    # Two seconds of real time; the daemon's clock below runs 100 times faster, so the
    # command lasts 200 of its seconds, well past the pass bound (time_budget_s + 60).
    config, bundle = board(tmp_path, publisher, f"echo start >> {starts}; sleep 2")
    agent = Agent(load(config))
    box: list[Any] = []
    origin = time.monotonic()
    daemon = Daemon(agent, notifier=Watchdog(box),
                    clock=lambda: origin + (time.monotonic() - origin) * 100)
    box.append(daemon)
    daemon.triggers = [OnePass(bundle, box)]
    try:
        assert daemon.run() == 0
    finally:
        agent.close()
    assert starts.read_text() == "start\n"
    fed = daemon.notifier.mid_pass
    assert fed and max(fed) > daemon.max_pass_s, (daemon.max_pass_s, fed)
