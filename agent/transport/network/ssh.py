"""ssh://: OpenSSH's client, pinned to one host key file and one key, read inside the budget.

``PinnedSSH`` implements dulwich's ``SSHVendor.run_command``: nothing is taken from the
environment or ~/.ssh, a host key is never trusted on first use, and once the sync's
budget is armed the client's stdout is read through a ``metered.BudgetedPipe``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from giter_agent.core.errors import ConfigError
from giter_agent.transport.network.metered import BudgetedPipe, Meter

if TYPE_CHECKING:
    from giter_agent.core.budget import Budget


class PinnedSSH:
    """Runs OpenSSH's client with nothing taken from the environment or ~/.ssh.

    The host key must already be in ``known_hosts`` (StrictHostKeyChecking=yes: an
    unknown or changed key fails, and nothing is ever written to the file); only
    ``key`` is offered; no agent, no password prompt. ``ConnectTimeout`` bounds the
    connect; keep-alives every ``read_timeout / 2`` drop a hub that stopped answering.
    """

    def __init__(self, key: Path, known_hosts: Path, connect_timeout: float,
                 read_timeout: float, ssh: str = "ssh", display: str = "the hub") -> None:
        self.key = key
        self.known_hosts = known_hosts
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.ssh = ssh
        self.display = display
        self.budget: Budget | None = None  # Remote.arm: the sync's time and bytes
        self._procs: list[Any] = []  # ssh clients started, ended by close()

    def argv(self, host: str, command: str, username: str | None, port: int | None,
             protocol_version: int | None) -> list[str]:
        options = {
            "BatchMode": "yes", "StrictHostKeyChecking": "yes", "CheckHostIP": "no",
            "UserKnownHostsFile": str(self.known_hosts), "GlobalKnownHostsFile": "/dev/null",
            "UpdateHostKeys": "no", "IdentitiesOnly": "yes", "IdentityFile": str(self.key),
            "IdentityAgent": "none", "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no", "ControlMaster": "no", "ControlPath": "none",
            "ConnectTimeout": str(max(1, round(self.connect_timeout))),
            "ServerAliveInterval": str(max(1, round(self.read_timeout / 2))),
            "ServerAliveCountMax": "2", "LogLevel": "ERROR",
        }
        if protocol_version != 0:
            options["SetEnv"] = f"GIT_PROTOCOL=version={protocol_version or 2}"
        args = [self.ssh, "-F", "/dev/null", "-x", "-T"]
        for name, value in options.items():
            args += ["-o", f"{name}={value}"]
        if port:
            args += ["-p", str(port)]
        if username:
            args += ["-l", username]
        return [*args, "--", host, command]

    def run_command(self, host: str, command: bytes | str, username: str | None = None,
                    port: int | None = None, password: str | None = None,
                    key_filename: str | None = None, ssh_command: str | None = None,
                    protocol_version: int | None = None) -> Any:
        import subprocess

        from dulwich.client import SubprocessWrapper

        if password is not None:
            raise ConfigError("network: ssh:// authenticates with network.ssh_key only")
        cmd = command.decode() if isinstance(command, bytes) else command
        proc = subprocess.Popen(self.argv(host, cmd, username, port, protocol_version),
                                bufsize=0, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self._procs = [p for p in self._procs if p.poll() is None] + [proc]
        wrapper = SubprocessWrapper(proc)
        if self.budget is not None:
            assert proc.stdout is not None
            pipe = BudgetedPipe(proc.stdout.fileno(), Meter(self.budget, self.display))
            # dulwich's own buffered reader would close the pipe when dropped: kept.
            pipe.unused = wrapper.read
            # dulwich's Protocol calls read(n) with a size, never read() to the end.
            wrapper.read = pipe.read  # type: ignore[assignment]
            wrapper.write = pipe.watch(wrapper.write)  # type: ignore[assignment]
        return wrapper

    def close(self) -> None:
        """End ssh clients a connection cut short left running (a budget, a cap)."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self._procs.clear()
