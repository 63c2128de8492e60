"""An exchange repository driven through ``giter-bundle``, and devices enrolled in it,
as an operator and a technician would use them (real git, real ssh-keygen)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

from giter_agent.cli.main import main as agent_main
from giter_bundle.cli import main as bundle_main
from support.devices import SimDevice
from support.git import run
from support.resources import API, BEACON

__all__ = ["API", "BEACON", "Device", "Fleet", "bundle_verifies", "capture", "enrolled",
           "motd"]


def capture(fn, argv: list[str]) -> tuple[int, str]:
    """Run a CLI ``main`` and return (exit code, stdout + stderr)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = fn([str(a) for a in argv])
    return code, out.getvalue()


class Fleet:
    """An exchange repository driven through ``giter-bundle``, as an operator would."""

    def __init__(self, tmp: Path, key: Path, name: str = "fleet") -> None:
        self.tmp = tmp
        self.root = tmp / name
        self.key = key
        code, out = capture(bundle_main, ["init", self.root, "--signing-key", key])
        assert code == 0, out

    def cli(self, *args: str | Path) -> tuple[int, str]:
        return capture(bundle_main, ["-C", self.root, *args])

    def ok(self, *args: str | Path) -> str:
        code, out = self.cli(*args)
        assert code == 0, out
        return out

    def git(self, *args: str | Path, check: bool = True):
        return run("git", "-C", self.root, *args, check=check)

    def rev(self, ref: str = "main") -> str:
        return self.git("rev-parse", ref).stdout.decode().strip()

    def write(self, rel: str, text: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    @property
    def trust_file(self) -> Path:
        return self.root / ".giter/trust/allowed_signers"

    def device_signers(self) -> Path:
        """Every enrolled device's .pub, concatenated: git's allowedSignersFile for status."""
        path = self.tmp / "device_signers"
        path.write_bytes(b"".join(p.read_bytes() for p in
                                  sorted((self.root / ".giter/devices").glob("*.pub"))))
        return path

    def verify_with_git(self, rev: str, signers: Path) -> bool:
        return self.git("-c", "gpg.format=ssh", "-c", f"gpg.ssh.allowedSignersFile={signers}",
                        "verify-commit", rev, check=False).returncode == 0

    def status(self) -> dict:
        return {d["device"]: d for d in json.loads(self.ok("status", "--json"))["devices"]}


class Device(SimDevice):
    """A simulated device of ``fleet``: its pinned trust file is the fleet's, copied as
    the installer would; ``cli`` keeps the command's output off the test's stdout."""

    def __init__(self, tmp: Path, device_id: str, fleet: Fleet,
                 groups: tuple[str, ...] | list[str] = ("lobby",)) -> None:
        (tmp / device_id).mkdir(parents=True, exist_ok=True)
        pinned = tmp / device_id / "allowed_signers"
        shutil.copy(fleet.trust_file, pinned)  # installed with the agent, read-only
        super().__init__(tmp, device_id, pinned, groups=groups)

    def cli(self, *args: str | Path) -> int:
        code, _ = capture(agent_main, ["-c", self.config, *args])
        return code

    def key_line(self) -> str:
        code, out = capture(agent_main, ["-c", self.config, "key"])
        assert code == 0, out
        return out.strip()

    @property
    def key_file(self) -> Path:
        return self.dir / "state" / "device_key"


def motd(device: Device, text: str, generation: str = "") -> str:
    return (f"{API}kind: File\nmetadata:\n  name: motd  # the welcome text\n{generation}"
            f"spec:\n  path: {device.root}/motd\n  content: {json.dumps(text)}\n")


def enrolled(fleet: Fleet, tmp: Path, *names: str, groups=("lobby",)) -> list[Device]:
    devices = [Device(tmp, name, fleet, groups) for name in names]
    for d in devices:
        args = [f"--group={g}" for g in groups]
        fleet.ok("enroll", d.id, d.key_line(), *args)
    return devices


def bundle_verifies(bundle: Path, repo: Path) -> bool:
    return run("git", "-C", repo, "bundle", "verify", bundle, check=False).returncode == 0
