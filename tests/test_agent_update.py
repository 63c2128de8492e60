"""The agent updates itself (``AgentUpdate``): real wheels built from this checkout.

The wheels are giter-agent 0.2.0 and a broken 0.3.0 (its daemon and sync layer raise
on import, so ``--version`` works and every sync and daemon start crashes), built once
per session by setuptools (tests/support/agent_wheels.py). The kind tests read them
from a real dulwich tree (``TreeArtifacts``) into real environments on disk, tried by
running them; the boot loader and the guard run with a clock the test moves; the
end-to-end tests drive ``giter-agent sync --usb`` and ``giter-agent run`` as processes,
as systemd would, and read the answer from the device's signed status with git.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from dulwich.object_store import DiskObjectStore
from support.agent_wheels import build, can_build
from support.git import Publisher
from support.kinds import condition, doc, specset, tree_artifacts

from giter_agent.cli import boot
from giter_agent.core.errors import ArtifactError
from giter_agent.core.versions import compare
from giter_agent.kinds import builtin_kinds
from giter_agent.kinds.agent_envs import AgentEnvs
from giter_agent.kinds.agent_update import AgentUpdateKind
from giter_agent.kinds.wheels import unpack, wheel_name
from giter_agent.reconcile.engine import reconcile
from giter_agent.state.update_journal import (
    CONFIRMED,
    FILE,
    ROLLED_BACK,
    TRIAL,
    UpdateJournal,
)

KEY = "AgentUpdate/agent"
DEVICE = "pi-01"
API = "apiVersion: giter.dev/v1alpha1\n"


@pytest.fixture(scope="session")
def wheels(tmp_path_factory) -> dict[str, Path]:
    why = can_build()
    if why:
        pytest.skip(why)
    work = tmp_path_factory.mktemp("agent-wheels")
    return {"0.2.0": build(work, "0.2.0"), "0.3.0": build(work, "0.3.0", broken=True)}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- versions ------------------------------------------------------------------------

@pytest.mark.parametrize(("older", "newer"), [
    ("0.1.0", "0.2.0"), ("0.9", "0.10"), ("1.0.dev1", "1.0a1"), ("1.0a1", "1.0b2"),
    ("1.0b2", "1.0rc1"), ("1.0rc1", "1.0"), ("1.0", "1.0.post1"), ("1.0.post1.dev1", "1.0.post1"),
    ("1.9.9", "2"),
])
def test_versions_are_ordered_as_pep_440_orders_them(older, newer):
    assert compare(older, newer) == -1 and compare(newer, older) == 1


def test_equal_versions_compare_equal_and_junk_is_refused():
    assert compare("1.0", "1.0.0") == 0 and compare("v2.1", "2.1") == 0
    for junk in ("", "one", "1.0+local", "1!2.0", "1..0"):
        with pytest.raises(ValueError):
            compare(junk, "1.0")


# -- wheels --------------------------------------------------------------------------

def test_a_wheel_unpacks_to_what_pip_installs(wheels, tmp_path):
    wheel = wheels["0.2.0"]
    ours = tmp_path / "ours"
    ours.mkdir()
    fd = os.open(ours, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with wheel.open("rb") as fh:
            unpack(wheel.name, fh, fd, 64 * 2**20)
    finally:
        os.close(fd)
    pip = tmp_path / "pip"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--disable-pip-version-check", "--no-compile", "--target", str(pip),
                    str(wheel)], check=True, capture_output=True)

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
                if p.is_file() and ".dist-info" not in str(p) and "/bin/" not in f"/{p}"
                and not str(p.relative_to(root)).startswith(("bin/", "share/"))}

    assert files(ours) == files(pip)
    assert "giter_agent/kinds/agent_update.py" in files(ours)


def _zip(entries: dict[str, bytes], *, symlink: str | None = None, pure: bool = True) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("x-1.0.dist-info/WHEEL",
                   f"Wheel-Version: 1.0\nRoot-Is-Purelib: {'true' if pure else 'false'}\n")
        for name, data in entries.items():
            z.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)
            z.writestr(info, "/etc/passwd")
    return out.getvalue()


@pytest.mark.parametrize(("name", "data", "why"), [
    ("x-1.0-py3-none-any.whl", _zip({"../evil.py": b""}), "odd name"),
    ("x-1.0-py3-none-any.whl", _zip({"/abs.py": b""}), "not a plain relative path"),
    ("x-1.0-py3-none-any.whl", _zip({}, symlink="x/link"), "symlink"),
    ("x-1.0-py3-none-any.whl", _zip({"x.py": b""}, pure=False), "Root-Is-Purelib"),
    ("x-1.0-cp311-cp311-linux_x86_64.whl", _zip({"x.py": b""}), "not a pure-Python"),
    ("x-1.0-py3-none-any.whl", b"not a zip", "not a zip"),
])
def test_an_unsafe_or_impure_wheel_is_refused(tmp_path, name, data, why):
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(ArtifactError, match=why):
            unpack(name, io.BytesIO(data), fd, 2**20)
    finally:
        os.close(fd)
    assert not (tmp_path.parent / "evil.py").exists()


def test_wheel_names():
    assert wheel_name("giter_agent-0.2.0-py3-none-any.whl").dist == "giter_agent"
    assert wheel_name("PyYAML-6.0-cp311-cp311-linux_armv7l.whl").pure is False
    assert wheel_name("giter-agent.tar.gz") is None


# -- the kind ------------------------------------------------------------------------

class Device:
    """Passes of the reconciler over one AgentUpdate, running ``version`` in ``env``."""

    def __init__(self, ctx, tmp_path: Path, version: str = "0.1.0", env: str | None = None):
        self.ctx = ctx
        self.state = tmp_path / "state"
        self.state.mkdir()
        ctx.update_journal = UpdateJournal(self.state / FILE)
        ctx.agent_envs = AgentEnvs(self.state)
        self.envs = ctx.agent_envs
        objects = tmp_path / "fleet-objects"
        objects.mkdir()
        self.store = DiskObjectStore.init(objects)
        self.records: dict = {}
        self.run_as(version, env)

    def run_as(self, version: str, env: str | None) -> None:
        self.kinds = builtin_kinds()
        self.kinds["AgentUpdate"] = AgentUpdateKind(running=(version, env))

    def apply(self, files: dict[str, bytes], folder: str = "artifacts/agent", **spec):
        self.ctx.artifacts = tree_artifacts(self.store, {f"{folder}/{n}": (d, 0o100644)
                                                        for n, d in files.items()})
        self.ctx.clock.advance(3600)  # past any retry the last pass asked for
        body = {"version": "0.2.0", "wheels": folder, **spec}
        result = reconcile(specset(doc("AgentUpdate", "agent", body)), self.ctx, self.kinds,
                           self.records, "c1")
        self.records = result.records
        return result.records[KEY]

    def journal(self) -> dict | None:
        return self.ctx.update_journal.entry()

    def built(self) -> list[str]:
        folder = self.state / "agent-envs/releases"
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def reason(record) -> str:
    cond = condition(record)
    assert cond is not None
    return cond["reason"]


def test_an_update_installs_beside_the_running_agent_and_selects_it(ctx, tmp_path, wheels):
    dev = Device(ctx, tmp_path)
    whl = wheels["0.2.0"]
    record = dev.apply({whl.name: whl.read_bytes()},
                       sha256=[f"{sha(whl)}  {whl.name}"], deadline="5m")
    assert reason(record) == "Restarting", record.status
    entry = dev.journal()
    assert entry["phase"] == TRIAL and entry["version"] == "0.2.0"
    assert entry["previous"] is None and entry["previousVersion"] == "0.1.0"
    assert entry["deadline"] == entry["at"] + 300 == ctx.clock() + 300
    name = entry["env"]
    assert dev.envs.selected() == name and dev.built() == [name]
    lib = dev.envs.lib(name)
    assert 'version__ = "0.2.0"' in (lib / "giter_agent/__init__.py").read_text()
    assert not list(lib.parent.glob("*.whl"))  # the wheel itself is not kept
    # The installed package starts the selected environment: it says it is 0.2.0.
    from giter_agent.state.agent_env import launch_argv

    said = subprocess.run(launch_argv(lib, ["--version"]), capture_output=True, text=True,
                          check=True)
    assert said.stdout.strip() == "giter-agent 0.2.0"
    assert record.status["observed"]["running"] == "0.1.0"
    # The same pass again (the restart has not happened yet) installs nothing new.
    assert reason(dev.apply({whl.name: whl.read_bytes()},
                            sha256=[f"{sha(whl)}  {whl.name}"], deadline="5m")) == "Restarting"
    assert dev.built() == [name]


def test_the_new_version_on_trial_reports_itself_and_prunes_once_confirmed(ctx, tmp_path,
                                                                            wheels):
    dev = Device(ctx, tmp_path)
    whl = wheels["0.2.0"]
    dev.apply({whl.name: whl.read_bytes()})
    name = dev.journal()["env"]
    dev.envs.build("0.0.1-old", [], ctx.artifacts, "0.0.1", try_it=False)  # an older one
    dev.run_as("0.2.0", name)
    record = dev.apply({whl.name: whl.read_bytes()})
    assert reason(record) == "Updated" and "on trial" in condition(record)["message"]
    assert record.status["observed"]["trial"]["phase"] == TRIAL
    assert ctx.update_journal.confirm(name)
    record = dev.apply({whl.name: whl.read_bytes()})
    assert reason(record) == "Updated" and record.status["observed"]["running"] == "0.2.0"
    assert dev.built() == [name]  # the one before the previous (here: the base) is gone


def test_a_downgrade_is_refused_unless_the_spec_allows_it(ctx, tmp_path, wheels):
    dev = Device(ctx, tmp_path, version="0.3.0")
    whl = wheels["0.2.0"]
    record = dev.apply({whl.name: whl.read_bytes()})
    assert reason(record) == "DowngradeRefused", record.status
    assert dev.journal() is None and dev.built() == [] and dev.envs.selected() is None
    record = dev.apply({whl.name: whl.read_bytes()}, allowDowngrade=True)
    assert reason(record) == "Restarting"
    assert dev.journal()["version"] == "0.2.0" and dev.envs.selected() is not None


def test_a_wheel_that_is_not_the_pinned_one_changes_nothing(ctx, tmp_path, wheels):
    dev = Device(ctx, tmp_path)
    whl = wheels["0.2.0"]
    record = dev.apply({whl.name: whl.read_bytes()}, sha256=[f"{'0' * 64}  {whl.name}"])
    assert reason(record) == "ArtifactMismatch", record.status
    assert "pins" in condition(record)["message"]
    assert "ArtifactMismatch" in yaml.safe_dump(record.status)  # a status YAML can hold
    assert dev.journal() is None and dev.envs.selected() is None
    assert dev.built() == []  # no half-built environment either


@pytest.mark.parametrize(("spec", "why"), [
    ({"wheels": "agent"}, "InvalidSpec"),
    ({"wheels": "artifacts/../etc"}, "InvalidSpec"),
    ({"wheels": "/etc"}, "InvalidSpec"),
    ({"version": "latest"}, "InvalidSpec"),
    ({"deadline": "5s"}, "InvalidSpec"),
])
def test_a_spec_outside_the_rules_is_refused_with_nothing_changed(ctx, tmp_path, wheels,
                                                                  spec, why):
    dev = Device(ctx, tmp_path)
    whl = wheels["0.2.0"]
    record = dev.apply({whl.name: whl.read_bytes()}, **spec)
    assert reason(record) == why, record.status
    assert dev.journal() is None and dev.built() == []


def test_a_folder_without_the_agent_wheel_of_that_version_is_refused(ctx, tmp_path, wheels):
    dev = Device(ctx, tmp_path)
    whl = wheels["0.3.0"]
    record = dev.apply({whl.name: whl.read_bytes()})  # the spec says 0.2.0
    assert reason(record) == "InvalidWheel" and "not 0.2.0" in condition(record)["message"]
    record = dev.apply({"notes.txt": b"hello"})
    assert reason(record) == "InvalidWheel"
    assert dev.journal() is None and dev.built() == []


def test_a_version_that_does_not_run_is_refused_before_the_switch(ctx, tmp_path):
    dev = Device(ctx, tmp_path)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("giter_agent-0.2.0.dist-info/WHEEL", "Root-Is-Purelib: true\n")
        z.writestr("giter_agent/__init__.py", "raise SystemExit('cannot start')\n")
    record = dev.apply({"giter_agent-0.2.0-py3-none-any.whl": out.getvalue()})
    assert reason(record) == "ArtifactCorrupt" and "cannot start" in condition(record)["message"]
    assert "ArtifactCorrupt" in yaml.safe_dump(record.status)
    assert dev.journal() is None and dev.built() == [] and dev.envs.selected() is None


def test_a_rolled_back_update_is_reported_and_not_tried_again(ctx, tmp_path, wheels):
    dev = Device(ctx, tmp_path)
    whl = wheels["0.2.0"]
    dev.apply({whl.name: whl.read_bytes()})
    entry = dev.journal()
    boot.roll_back(ctx.update_journal, dev.envs, entry, "it crashed", ctx.clock)
    assert dev.envs.selected() is None
    record = dev.apply({whl.name: whl.read_bytes()})
    assert reason(record) == "UpdateRolledBack", record.status
    assert "it crashed" in condition(record)["message"]
    assert record.status["observed"]["trial"]["phase"] == ROLLED_BACK
    assert dev.journal()["phase"] == ROLLED_BACK and dev.envs.selected() is None
    # A new spec (a new deadline here) is a new attempt.
    assert reason(dev.apply({whl.name: whl.read_bytes()}, deadline="20m")) == "Restarting"


# -- the boot loader and the guard ---------------------------------------------------

def trial(tmp_path: Path, clock, wheels, starts: int = 0) -> tuple[Path, str]:
    """A state directory with 0.2.0 on trial (deadline in 10 minutes)."""
    from support.kinds import tree_artifacts as ta

    state = tmp_path / "state"
    state.mkdir(parents=True)
    objects = tmp_path / "objects"
    objects.mkdir()
    whl = wheels["0.2.0"]
    artifacts = ta(DiskObjectStore.init(objects),
                   {f"artifacts/agent/{whl.name}": (whl.read_bytes(), 0o100644)})
    from giter_agent.kinds.wheels import Wheel

    envs = AgentEnvs(state)
    envs.build("0.2.0-x", [Wheel(whl.name, f"artifacts/agent/{whl.name}", None)], artifacts,
               "0.2.0", try_it=False)
    UpdateJournal(state / FILE).put({"phase": TRIAL, "env": "0.2.0-x", "version": "0.2.0",
                                     "previous": None, "previousVersion": "0.1.0",
                                     "deadline": clock() + 600, "starts": starts})
    return state, "0.2.0-x"


def test_boot_runs_the_trial_counts_starts_and_rolls_back_after_too_many(tmp_path, clock,
                                                                        wheels):
    state, env = trial(tmp_path, clock, wheels)
    assert boot.decide(state, clock, writes=True, counts=True) == (env, boot_entry(state))
    assert AgentEnvs(state).selected() == env  # the link agrees with the journal
    assert boot_entry(state)["starts"] == 1
    # A one-shot command runs the trial too, and counts nothing.
    assert boot.decide(state, clock, writes=True, counts=False)[0] == env
    assert boot.decide(state, clock, writes=True, counts=True)[0] == env
    assert boot_entry(state)["starts"] == 2
    name, on_trial = boot.decide(state, clock, writes=True, counts=True)
    assert (name, on_trial) == (None, None)
    entry = UpdateJournal(state / FILE).entry()
    assert entry["phase"] == ROLLED_BACK and "started 2 times" in entry["message"]
    assert AgentEnvs(state).selected() is None


def boot_entry(state: Path) -> dict:
    return UpdateJournal(state / FILE).entry()


def test_boot_rolls_back_a_trial_past_its_deadline(tmp_path, clock, wheels):
    state, env = trial(tmp_path, clock, wheels)
    clock.advance(599)
    assert boot.decide(state, clock, writes=False, counts=False)[0] == env
    clock.advance(1)
    # A reader (status, plan) changes nothing ...
    assert boot.decide(state, clock, writes=False, counts=False)[0] == env
    assert boot_entry(state)["phase"] == TRIAL
    # ... the next writer rolls back.
    assert boot.decide(state, clock, writes=True, counts=False) == (None, None)
    assert boot_entry(state)["phase"] == ROLLED_BACK
    assert "deadline" in boot_entry(state)["message"]


def test_boot_puts_the_link_back_when_cut_between_journal_and_flip(tmp_path, clock, wheels):
    state, env = trial(tmp_path, clock, wheels)
    AgentEnvs(state).select(env, clock())
    # The rollback was journaled, the power went before the link moved back.
    UpdateJournal(state / FILE).roll_back(boot_entry(state), "UpdateRolledBack", "x")
    assert AgentEnvs(state).selected() == env
    assert boot.decide(state, clock, writes=True, counts=True) == (None, None)
    assert AgentEnvs(state).selected() is None


def test_the_guard_rolls_back_and_kills_a_version_that_misses_its_deadline(tmp_path, clock,
                                                                          wheels):
    state, env = trial(tmp_path, clock, wheels, starts=1)
    AgentEnvs(state).select(env, clock())
    killed: list[tuple[int, int]] = []
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock.advance(s)

    ended = boot.guard(state, env, 4242, clock=clock, sleep=sleep, alive=lambda pid: True,
                       kill=lambda pid, sig: killed.append((pid, sig)))
    assert ended == "rolled-back" and killed == [(4242, signal.SIGKILL)]
    assert sum(slept) == 600  # woke up to look every few seconds, no later than the deadline
    assert boot_entry(state)["phase"] == ROLLED_BACK and AgentEnvs(state).selected() is None


def test_the_guard_ends_when_the_trial_is_confirmed_or_the_daemon_is_gone(tmp_path, clock,
                                                                         wheels):
    state, env = trial(tmp_path, clock, wheels)
    calls = []

    def confirm_later(s: float) -> None:
        calls.append(s)
        clock.advance(s)
        if len(calls) == 3:
            assert UpdateJournal(state / FILE).confirm(env)

    assert boot.guard(state, env, 1, clock=clock, sleep=confirm_later, alive=lambda p: True,
                      kill=lambda p, s: pytest.fail("killed")) == "confirmed"
    assert boot_entry(state)["phase"] == CONFIRMED
    state2, env2 = trial(tmp_path / "two", clock, wheels)
    assert boot.guard(state2, env2, 1, clock=clock, sleep=clock.advance,
                      alive=lambda p: False, kill=lambda p, s: pytest.fail("killed")) == "gone"
    assert boot_entry(state2)["phase"] == TRIAL


def test_the_daemon_restarts_when_another_environment_is_selected(tmp_path, clock, wheels,
                                                                  monkeypatch):
    state, env = trial(tmp_path, clock, wheels)
    monkeypatch.delenv("GITER_AGENT_ENV", raising=False)
    assert "0.2.0-x" in boot.restart_reason(state)
    monkeypatch.setenv("GITER_AGENT_ENV", env)
    assert boot.restart_reason(state) is None and boot.on_trial(state)
    UpdateJournal(state / FILE).roll_back(boot_entry(state), "UpdateRolledBack", "x")
    assert "installed package" in boot.restart_reason(state)
    assert not boot.on_trial(state)


# -- end to end: the processes systemd would run -------------------------------------

class Board:
    """A device driven as processes (``python -m giter_agent``, the installed package),
    a publisher with real git, and a stick."""

    def __init__(self, tmp_path: Path, publisher: Publisher, wheels: dict[str, Path]) -> None:
        self.tmp = tmp_path
        self.pub = publisher
        self.wheels = wheels
        self.state = tmp_path / "device/state"
        self.stick = tmp_path / "stick"
        (self.stick / "giter/inbox").mkdir(parents=True)
        self.config = tmp_path / "device/agent.toml"
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(f'device_id = "{DEVICE}"\nstate_dir = "state"\n'
                               f'board = "generic-mock"\n'
                               f'allowed_signers = "{publisher.allowed_signers}"\n')
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        self.runs = 0
        self.procs: list[subprocess.Popen] = []

    def publish(self, version: str, first: bool = False) -> None:
        whl = self.wheels[version]
        (self.pub.root / f"artifacts/agent-{version}").mkdir(parents=True)
        (self.pub.root / f"artifacts/agent-{version}" / whl.name).write_bytes(whl.read_bytes())
        spec = (f"{API}kind: AgentUpdate\nmetadata:\n  name: agent\nspec:\n"
                f"  version: {version}\n  wheels: artifacts/agent-{version}\n"
                f"  sha256:\n  - {sha(whl)}  {whl.name}\n  deadline: 10m\n")
        self.pub.commit(f"agent {version}", files={f"devices/{DEVICE}/agent.yaml": spec})
        for old in (self.stick / "giter/inbox").glob("*.bundle"):
            old.unlink()
        self.pub.bundle(self.stick / f"giter/inbox/{version}.bundle",
                        *(("main",) if first else ("main~1..main",)))

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "giter_agent", "-c", str(self.config), *args]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "GITER_AGENT_ENV"}
        return {**env, "PYTHONUNBUFFERED": "1"}  # as the unit sets it: the log is read

    def sync(self) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv("sync", "--usb", str(self.stick)), capture_output=True,
                              text=True, env=self.env(), timeout=300, check=False)

    def start(self) -> subprocess.Popen:
        """``giter-agent run``, as systemd starts it: its own ``$NOTIFY_SOCKET`` (read by
        ``ready``), output to a file (the guard the boot loader forks must not hold a
        pipe the test waits on)."""
        import socket

        self.runs += 1
        log = (self.logs / f"run-{self.runs}.log").open("w")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        path = self.tmp / f"notify-{self.runs}"
        self.notify.bind(str(path))
        self.notify.settimeout(0.5)
        proc = subprocess.Popen(self.argv("run"), stdout=log, stderr=subprocess.STDOUT,
                                env={**self.env(), "NOTIFY_SOCKET": str(path)})
        self.procs.append(proc)
        return proc

    def ready(self, proc: subprocess.Popen) -> None:
        """Wait for the daemon's READY=1 (the process id systemd knows: after the boot
        loader's exec, the selected version says it)."""
        def said() -> bool:
            try:
                return b"READY=1" in self.notify.recv(4096)
            except TimeoutError:
                return False
        self.wait_for(said, proc)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def journal(self) -> dict | None:
        return UpdateJournal(self.state / FILE).entry()

    def wait_for(self, what, proc: subprocess.Popen | None = None, limit: float = 120) -> None:
        import time

        end = time.monotonic() + limit
        while not what():
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"the daemon ended ({proc.returncode}): "
                                     f"{(self.logs / f'run-{self.runs}.log').read_text()}")
            if time.monotonic() > end:
                raise AssertionError(f"gave up waiting; journal: {self.journal()}")
            time.sleep(0.2)

    def own_summary(self) -> dict:
        """The summary in the device's own newest status commit, read with git."""
        text = subprocess.run(["git", "--git-dir", str(self.state / "repo.git"), "show",
                               f"refs/heads/status/{DEVICE}:.giter/status/{DEVICE}.yaml"],
                              capture_output=True, check=True, text=True).stdout
        return yaml.safe_load(text)["status"]

    def stick_status(self) -> dict:
        """The AgentUpdate's status in the signed status commit the stick carries,
        read with git (verified with the device key is the sync tests' business)."""
        bundle = self.stick / f"giter/outbox/{DEVICE}.bundle"
        self.pub.git("fetch", "-q", str(bundle),
                     f"+refs/heads/status/{DEVICE}:refs/remotes/device/status")
        text = self.pub.git("show", f"refs/remotes/device/status:devices/{DEVICE}/agent.yaml"
                            ).stdout.decode()
        return yaml.safe_load(text)["status"]


@pytest.fixture
def board(tmp_path, publisher, wheels):
    made = Board(tmp_path, publisher, wheels)
    yield made
    made.close()


def test_an_update_that_works_and_one_that_fails_and_is_rolled_back(board):
    dev = board
    dev.publish("0.2.0", first=True)
    # The daemon of the installed package (0.1.0) runs; the stick is synced beside it.
    daemon = dev.start()
    dev.ready(daemon)
    done = dev.sync()
    assert done.returncode == 3, done.stderr  # the update is not Ready until it runs
    status = dev.stick_status()
    assert status["conditions"][0]["reason"] == "Restarting"
    assert status["observed"]["running"] == "0.1.0"
    assert dev.journal()["phase"] == TRIAL
    # The daemon sees another version selected and ends for systemd to restart it.
    assert daemon.wait(timeout=120) == 75
    # systemd starts it again: the installed package runs the selected 0.2.0, which
    # writes a status commit at once and so confirms its trial.
    daemon = dev.start()
    dev.ready(daemon)
    dev.wait_for(lambda: dev.journal()["phase"] == CONFIRMED, daemon)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0
    # The confirming status commit was written by 0.2.0's code: the daemon's pass
    # worker runs the selected version too, not the installed package's.
    assert dev.own_summary()["agentVersion"] == "0.2.0"
    assert dev.journal()["starts"] == 1
    said = subprocess.run(dev.argv("--version"), capture_output=True, text=True,
                          env=dev.env(), check=True).stdout
    assert said.startswith("giter-agent 0.2.0 (agent environment 0.2.0-"), said
    done = dev.sync()  # the one-shot sync runs 0.2.0 too, and writes the stick
    assert done.returncode == 0, done.stderr
    status = dev.stick_status()
    assert status["conditions"][0]["reason"] == "Updated"
    assert status["observed"]["running"] == "0.2.0"
    assert status["observed"]["trial"]["phase"] == CONFIRMED

    # 0.3.0 is broken: every start crashes. It is installed and selected ...
    dev.publish("0.3.0")
    done = dev.sync()
    assert done.returncode == 3, done.stderr
    assert dev.journal()["version"] == "0.3.0"
    # ... systemd starts it twice, and twice it crashes ...
    for _ in range(2):
        crashed = dev.start()
        assert crashed.wait(timeout=120) not in (0, 75)
        log = (dev.logs / f"run-{dev.runs}.log").read_text()
        assert "this build of giter-agent is broken" in log
    assert dev.journal()["starts"] == 2
    # ... and the next start is 0.2.0 again, which reports the failure.
    done = dev.sync()
    assert dev.journal()["phase"] == ROLLED_BACK
    status = dev.stick_status()
    assert status["conditions"][0]["reason"] == "UpdateRolledBack", status
    assert status["observed"]["running"] == "0.2.0"
    assert "started 2 times" in status["conditions"][0]["message"]
    assert done.returncode == 3


@pytest.mark.skipif(os.geteuid() != 0, reason="giving the state to another user needs root")
def test_the_boot_loader_runs_an_environment_only_for_the_user_who_owns_the_state(
        tmp_path, clock, wheels, monkeypatch):
    import argparse

    state, env = trial(tmp_path, clock, wheels)
    AgentEnvs(state).select(env, clock())
    config = tmp_path / "agent.toml"
    config.write_text(f'device_id = "pi-01"\nstate_dir = "{state}"\nboard = "generic-mock"\n'
                      f'allowed_signers = "{config}"\n')
    execs: list[list[str]] = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: execs.append(argv))
    monkeypatch.delenv("GITER_AGENT_ENV", raising=False)
    args = argparse.Namespace(command="status", config=config)
    os.chown(state, os.geteuid() + 4242, -1)  # another user's state (the service's)
    boot.boot(args, ["-c", str(config), "status"])
    assert execs == []  # the installed package's code runs: never code that user wrote
    os.chown(state, os.geteuid(), -1)
    boot.boot(args, ["-c", str(config), "status"])
    assert len(execs) == 1 and str(AgentEnvs(state).lib(env)) in execs[0][4]
    assert execs[0][5:] == ["-c", str(config), "status"]
