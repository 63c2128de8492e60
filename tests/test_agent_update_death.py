"""Death tests of an agent update: ``giter-agent sync`` killed at each step of the switch.

The device runs the installed package (0.1.0); the stick brings an ``AgentUpdate`` to
0.2.0 (a wheel built from this checkout, tests/support/agent_wheels.py). The sync that
installs and switches is killed (strace ``inject``, as tests/support/deathtest.py does)
at the syscalls that matter: the rename that names the finished environment, the
journal written before the switch, the rename that flips ``current``, the fsync right
after it, and at a seeded sample of the renames and fsyncs around them. Right after the
kill, the environment the journal wants (``state.update_journal.wanted``) is the
installed package or 0.2.0, and an environment that is named is whole. The next syncs
must converge: 0.2.0 runs, its status commit confirms it, nothing half-built is left.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.agent_wheels import build, can_build
from support.deathtest import API, DEVICE, have_strace
from support.git import Publisher, ssh_keygen

from giter_agent.kinds.agent_envs import AgentEnvs
from giter_agent.state.update_journal import CONFIRMED, FILE, UpdateJournal, wanted

pytestmark = pytest.mark.skipif(not have_strace(),
                                reason="strace is not installed (Debian package strace)")
TRACED = "rename,renameat,renameat2,fsync"
SAMPLE, SEED = 4, 23


class UpdateCase:
    """A device, a stick with the update, and a saved copy of both to start each run from."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.live = base / "live"
        self.seed = base / "seed"
        self.state = self.live / "device/state"
        self.stick = self.live / "stick"
        self.config = self.live / "device/agent.toml"

    def setup(self, wheel: Path) -> UpdateCase:
        (self.stick / "giter/inbox").mkdir(parents=True)
        self.config.parent.mkdir(parents=True)
        pub = Publisher(self.base / "fleet", ssh_keygen(self.base / "publisher_ed25519"))
        self.config.write_text(f'device_id = "{DEVICE}"\nstate_dir = "state"\n'
                               f'board = "generic-mock"\n'
                               f'allowed_signers = "{pub.allowed_signers}"\n')
        (pub.root / "artifacts/agent").mkdir(parents=True)
        shutil.copy(wheel, pub.root / "artifacts/agent" / wheel.name)
        pub.commit("agent 0.2.0", files={f"devices/{DEVICE}/agent.yaml": (
            f"{API}kind: AgentUpdate\nmetadata:\n  name: agent\nspec:\n  version: 0.2.0\n"
            "  wheels: artifacts/agent\n")})
        pub.bundle(self.stick / "giter/inbox/update.bundle")
        shutil.copytree(self.live, self.seed, symlinks=True)
        return self

    def restore(self) -> None:
        shutil.rmtree(self.live)
        shutil.copytree(self.seed, self.live, symlinks=True)

    def sync(self, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "GITER_AGENT_ENV"}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return subprocess.run([*prefix, sys.executable, "-m", "giter_agent", "-c",
                               str(self.config), "sync", "--usb", str(self.stick)],
                              capture_output=True, text=True, env=env, timeout=300,
                              check=False)

    def trace(self) -> list[str]:
        """The traced syscalls of a clean run, in order (``name(args...``)."""
        self.restore()
        log = self.base / "clean.strace"
        done = self.sync(("strace", "-f", "-qq", "-o", str(log), "-e", f"trace={TRACED}"))
        assert done.returncode == 3, done.stderr  # Restarting: not Ready until it runs
        calls = []
        for line in log.read_text(errors="replace").splitlines():
            call = line.split(None, 1)[-1]
            if re.match(r"(rename|renameat|renameat2|fsync)\(", call):
                calls.append(call)
        return calls

    def kill_at(self, syscall: str, n: int) -> subprocess.CompletedProcess:
        self.restore()
        return self.sync(("strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={syscall}",
                          "-e", f"inject={syscall}:signal=KILL:when={n}"))

    def selected(self) -> str | None:
        envs = AgentEnvs(self.state)
        return wanted(UpdateJournal(self.state / FILE).entry(), envs.selected())


def nth(calls: list[str], index: int) -> tuple[str, int]:
    """The syscall of ``calls[index]`` and which one of its name it is (strace's N)."""
    name = calls[index].split("(", 1)[0]
    return name, sum(1 for c in calls[:index + 1] if c.split("(", 1)[0] == name)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    why = can_build()
    if why:
        pytest.skip(why)
    base = tmp_path_factory.mktemp("death-update")
    wheel = build(base / "wheels", "0.2.0")
    made = UpdateCase(base).setup(wheel)
    made.calls = made.trace()
    return made


def _targets(calls: list[str]) -> dict[str, int]:
    env = next(i for i, c in enumerate(calls)
               if re.search(r'"\.0\.2\.0-[0-9a-f]{12}\.[0-9a-f]+\.giter-tmp"', c))
    journal = next(i for i, c in enumerate(calls) if "agent-update.journal\"" in c)
    flip = next(i for i, c in enumerate(calls) if re.search(r'"\.current\.[0-9a-f]+\.giter-tmp"',
                                                           c))
    return {"environment": env, "journal": journal, "current-flip": flip,
            "after-flip": flip + 1}


def _check(case: UpdateCase, where: str) -> None:
    # Right after the kill: the installed package, or 0.2.0 whole.
    chosen = case.selected()
    if chosen is not None:
        init = AgentEnvs(case.state).lib(chosen) / "giter_agent/__init__.py"
        assert 'version__ = "0.2.0"' in init.read_text(), where
    # The next syncs converge: the update goes through and 0.2.0 confirms itself.
    for _ in range(3):
        done = case.sync()
        if done.returncode == 0:
            break
        assert done.returncode == 3, f"{where}: {done.stderr}"
    assert done.returncode == 0, f"{where}: {done.stderr}"
    entry = UpdateJournal(case.state / FILE).entry()
    assert entry["phase"] == CONFIRMED and entry["version"] == "0.2.0", where
    releases = case.state / "agent-envs/releases"
    assert [p.name for p in releases.iterdir()] == [entry["env"]], where
    assert not [p for p in (case.state / "agent-envs").iterdir() if p.name.endswith(".giter-tmp")]


@pytest.mark.parametrize("step", ["environment", "journal", "current-flip", "after-flip"])
def test_a_kill_at_each_step_of_the_switch_leaves_old_or_new_and_converges(case, step):
    syscall, n = nth(case.calls, _targets(case.calls)[step])
    killed = case.kill_at(syscall, n)
    assert killed.returncode != 0
    if step in ("environment", "journal"):
        assert case.selected() is None  # cut before the trial was recorded: the old one
    else:
        assert case.selected() is not None  # the trial is recorded: the new one is chosen
    _check(case, f"{step}: {syscall} #{n}")


def test_a_kill_at_a_sample_of_other_points_converges(case):
    targets = _targets(case.calls)
    lo, hi = targets["environment"] - 6, targets["after-flip"] + 6
    others = [i for i in range(max(0, lo), min(len(case.calls), hi))
              if i not in targets.values()]
    for index in random.Random(SEED).sample(others, min(SAMPLE, len(others))):
        syscall, n = nth(case.calls, index)
        case.kill_at(syscall, n)
        _check(case, f"{syscall} #{n}: {case.calls[index][:80]}")
