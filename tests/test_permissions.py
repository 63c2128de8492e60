"""Permission problems as an admin meets them: the CLI run as the wrong user.

The state directory belongs to one user (here ``daemon``, standing in for ``giter``);
the commands run as another (``nobody``, standing in for ``pi``) through a real
``setuid`` in the child, so the kernel does the refusing. Then root, on the same
state. Needs root (to switch users) and a Python the other user can run.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from support.devices import SimDevice

OWNER = pwd.getpwnam("daemon") if "daemon" in {p.pw_name for p in pwd.getpwall()} else None
NOBODY = 65534


def _python_for_others() -> str | None:
    """A python3.11 an unprivileged user may execute (a pyenv one under /root may not be)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        if os.path.exists(candidate):
            probe = subprocess.run([candidate, "-c", "print(1)"], user=NOBODY, group=NOBODY,
                                   extra_groups=[], capture_output=True, check=False)
            if probe.returncode == 0:
                return candidate
    return None


pytestmark = pytest.mark.skipif(os.geteuid() != 0 or OWNER is None,
                                reason="needs root, to run commands as other users")


@pytest.fixture
def board(publisher):
    """A config everyone may read, and a state directory only ``daemon`` may enter."""
    python = _python_for_others()
    if python is None:
        pytest.skip("no Python that an unprivileged user can run")
    base = Path(tempfile.mkdtemp(prefix="giter-perm-"))
    try:
        base.chmod(0o755)
        signers = base / "allowed_signers"
        shutil.copy(publisher.allowed_signers, signers)
        device = SimDevice(base, "pi-01", signers)
        tip = publisher.commit("spec", files=device.spec_files("hello\n"))
        bundle = publisher.bundle(base / "fleet.bundle")
        agent = device.agent()
        try:
            assert agent.sync([bundle], source="test").applied == tip
        finally:
            agent.close()
        for root, dirs, files in os.walk(base):
            for name in (*dirs, *files):
                os.chmod(os.path.join(root, name), 0o755 if name in dirs else 0o644)
        state = device.dir / "state"
        for root, dirs, files in os.walk(state):
            for name in dirs + files:
                os.chown(os.path.join(root, name), OWNER.pw_uid, OWNER.pw_gid)
        os.chown(state, OWNER.pw_uid, OWNER.pw_gid)
        state.chmod(0o700)
        yield device, bundle, python
    finally:
        shutil.rmtree(base, ignore_errors=True)


def giter_agent(python: str, device: SimDevice, *args: str, as_user: int | None = NOBODY
                ) -> subprocess.CompletedProcess:
    cli = [str(device.config_path), *args]
    if as_user is None:
        argv = [sys.executable, "-m", "giter_agent", "-c", *cli]
        extra = {}
    else:
        # The test's own site-packages (its .pth files map the packages to this tree),
        # added by the other user's interpreter.
        site = next(p for p in sys.path if p.endswith("site-packages"))
        boot = ("import runpy, site, sys; site.addsitedir(sys.argv.pop(1)); "
                "runpy.run_module('giter_agent', run_name='__main__', alter_sys=True)")
        argv = [python, "-c", boot, site, "-c", *cli]
        extra = {"user": as_user, "group": as_user, "extra_groups": []}
    env = dict(os.environ, HOME="/tmp")
    env.pop("PYTHONPATH", None)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120,
                          check=False, cwd="/", **extra)


@pytest.mark.parametrize("command", [["status"], ["plan"], ["key"], ["sync", "--bundle"]])
def test_the_wrong_user_gets_one_line_and_the_command_to_run(board, command):
    device, bundle, python = board
    args = [*command, str(bundle)] if command[-1] == "--bundle" else command
    done = giter_agent(python, device, *args)
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("giter-agent: PermissionDenied: ")
    assert "it belongs to daemon" in lines[0]
    assert f"sudo -u daemon giter-agent -c {device.config_path} {' '.join(args)}" in lines[0]


def test_doctor_never_crashes_on_a_state_it_cannot_read(board):
    device, _, python = board
    done = giter_agent(python, device, "doctor")
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert done.returncode == 1  # a failing check, reported as one
    assert "device key" in done.stdout
    assert f"sudo -u daemon giter-agent -c {device.config_path} doctor" in done.stdout


def test_root_on_the_service_users_state_is_refused_and_changes_nothing(board):
    device, bundle, _ = board
    state = device.dir / "state"
    before = sorted((p.name, p.stat().st_uid) for p in state.rglob("*"))
    for args in (["sync", "--bundle", str(bundle)], ["key"]):
        done = giter_agent("", device, *args, as_user=None)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done
        line = done.stderr.strip()
        assert "\n" not in line and line.startswith("giter-agent: RunningAsRoot: ")
        assert f"sudo -u daemon giter-agent -c {device.config_path} {' '.join(args)}" in line
    assert sorted((p.name, p.stat().st_uid) for p in state.rglob("*")) == before
    # Reading is harmless: status as root still answers.
    assert giter_agent("", device, "status", as_user=None).returncode == 0

