"""The network transport: a dulwich client for the fleet's git server, and its failures.

``open_remote`` turns ``[network]`` into a dulwich client with connect and read
timeouts and a pinned identity: git:// (plain TCP), http(s):// (urllib3; basic auth
whose password or token is read from a file only the agent may read; TLS verified
against the system's CAs or a pinned ``ca_file``) and ssh:// (OpenSSH's client with a
key file and a pinned known_hosts file, never trusting a host key on first use).
``transport_errors`` maps whatever a transport raises into a ``NetworkError`` whose
reason says what a person should do about it.

Nothing here touches the object store: ``history.store`` fetches and pushes through
the client this module builds, and ``sync.agent`` decides what to fetch and push.
dulwich's client modules are heavy, so they are imported only when a sync connects.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import select
import socket
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

from giter_agent import __version__
from giter_agent.config.agent_toml import Network
from giter_agent.core.errors import (
    ConfigError,
    GiterError,
    HubRemoteError,
    NetworkError,
    StorageError,
    hub_error,
)

log = logging.getLogger("giter.network")




@dataclass
class Remote:
    """A connected-on-demand dulwich client and the path to the repository on it."""

    client: Any
    path: str
    display: str  # the URL as logs and reports show it (never holds a secret)

    def close(self) -> None:
        self.client.close()


def display_url(url: str) -> str:
    """``url`` without any user-info: safe to log and to write into status."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def open_remote(net: Network) -> Remote:
    """A client for ``net.url``; reads the secrets it needs (ConfigError if exposed)."""
    parts = urlsplit(net.url)
    display = display_url(net.url)
    host = parts.hostname or ""
    if net.scheme == "git":
        client = _timed_tcp_class()(host, parts.port, net.connect_timeout_s,
                                    net.read_timeout_s)
        return Remote(client, parts.path, display)
    if net.scheme in ("http", "https"):
        return Remote(_http_client(net, display), "", display)
    assert net.ssh_key is not None and net.known_hosts is not None  # config checked
    check_private(net.ssh_key, "network.ssh_key")
    check_not_writable_by_others(net.known_hosts, "network.known_hosts")
    from dulwich.client import SSHGitClient, SSHVendor

    vendor = PinnedSSH(net.ssh_key, net.known_hosts, net.connect_timeout_s,
                       net.read_timeout_s)
    # PinnedSSH implements SSHVendor's one method; subclassing it would load dulwich's
    # client at import time, which the agent avoids (RAM), so the type is named here.
    client = SSHGitClient(host, port=parts.port, username=parts.username or net.username,
                          vendor=cast("SSHVendor", vendor))
    return Remote(client, parts.path, display)


# -- secrets ----------------------------------------------------------------------------

def check_private(path: Path, key: str) -> os.stat_result:
    """Refuse a secret file that anyone but the agent's own user could read or change."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{key}: {path} is not a regular file")
    if st.st_mode & 0o077 or st.st_uid != os.geteuid():
        raise ConfigError(f"{key}: {path} must belong to the agent's user and be readable "
                          f"by it alone (it is mode {stat.S_IMODE(st.st_mode):04o}, owner "
                          f"uid {st.st_uid}): chmod 600, chown to the agent's user")
    return st


def check_not_writable_by_others(path: Path, key: str) -> None:
    """A pinned file (known_hosts, CA) that others may change pins nothing."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{key}: {path} is not a regular file")
    if st.st_mode & 0o022 or st.st_uid not in (0, os.geteuid()):
        raise ConfigError(f"{key}: {path} must not be writable by anyone but root or the "
                          f"agent's user (it is mode {stat.S_IMODE(st.st_mode):04o})")


def read_secret(path: Path, key: str) -> str:
    """The first line of a private file: a password or an access token."""
    check_private(path, key)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc}") from None
    secret = text.strip("\n").split("\n", 1)[0].strip()
    if not secret:
        raise ConfigError(f"{key}: {path} is empty")
    return secret


# -- transports ---------------------------------------------------------------------------

def _http_client(net: Network, display: str) -> Any:
    import urllib3
    from dulwich.client import Urllib3HttpGitClient

    password = None
    if net.password_file is not None:
        password = read_secret(net.password_file, "network.password_file")
    if net.ca_file is not None:
        check_not_writable_by_others(net.ca_file, "network.ca_file")
    pool = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=net.connect_timeout_s, read=net.read_timeout_s),
        # Failures are retried by the agent's backoff, not inside one attempt; a few
        # redirects are followed (dulwich drops the credentials on a change of origin).
        retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=3),
        cert_reqs="CERT_REQUIRED",
        ca_certs=str(net.ca_file) if net.ca_file else None,
        headers={"User-Agent": f"git/2.0 (giter-agent {__version__})"},
    )
    return Urllib3HttpGitClient(display, pool_manager=pool, username=net.username,
                                password=password)


@functools.cache
def _timed_tcp_class() -> type:
    """dulwich's ``TCPGitClient`` with a connect timeout and a read timeout.

    dulwich connects git:// sockets with neither; this subclass opens the socket
    itself. Built on first use, once per process, so dulwich loads only when a sync
    connects.
    """
    from dulwich.client import TCPGitClient
    from dulwich.protocol import Protocol

    class TimedTCPGitClient(TCPGitClient):
        def __init__(self, host: str, port: int | None, connect_timeout: float,
                     read_timeout: float) -> None:
            super().__init__(host, port=port)
            self._timeouts = (connect_timeout, read_timeout)

        def _connect(self, cmd: bytes, path: str | bytes,
                     protocol_version: int | None = None) -> tuple[Any, Callable[[], bool], None]:
            connect_timeout, read_timeout = self._timeouts
            raw_path = path.encode() if isinstance(path, str) else path
            sock = socket.create_connection((self._host, self._port), timeout=connect_timeout)
            sock.settimeout(read_timeout)  # every later recv/send: a stalled hub is offline
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rfile = sock.makefile("rb", -1)
            wfile = sock.makefile("wb", 0)

            def close() -> None:
                rfile.close()
                wfile.close()
                sock.close()

            def shutdown_write() -> None:
                wfile.flush()
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)

            proto = Protocol(rfile.read, wfile.write, close,
                             report_activity=self._report_activity,
                             shutdown_write=shutdown_write)
            # Fetches ask for protocol v2 after two NULs, where servers that only know
            # v0 do not look (gitprotocol-pack); pushes speak v0, as dulwich's do.
            version = (protocol_version or 2) if cmd == b"upload-pack" else 0
            self.protocol_version = version
            extra = b"\0\0version=%d\0" % version if version == 2 else b""
            proto.send_cmd(b"git-" + cmd, raw_path, b"host=" + self._host.encode("idna") + extra)
            return proto, lambda: bool(select.select([sock], [], [], 0)[0]), None

    return TimedTCPGitClient


class PinnedSSH:
    """Runs OpenSSH's client with nothing taken from the environment or ~/.ssh.

    The host key must already be in ``known_hosts`` (StrictHostKeyChecking=yes: an
    unknown or changed key fails, and nothing is ever written to the file); only
    ``key`` is offered; no agent, no password prompt. ``ConnectTimeout`` bounds the
    connect; keep-alives every ``read_timeout / 2`` drop a hub that stopped answering.
    Implements dulwich's ``SSHVendor.run_command``.
    """

    def __init__(self, key: Path, known_hosts: Path, connect_timeout: float,
                 read_timeout: float, ssh: str = "ssh") -> None:
        self.key = key
        self.known_hosts = known_hosts
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.ssh = ssh

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
        return SubprocessWrapper(proc)


# -- failures -----------------------------------------------------------------------------

_SSH_PATTERNS = (
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", "HostKeyMismatch",
     "the hub's SSH host key does not match the pinned one in network.known_hosts"),
    ("Host key verification failed", "UnknownHostKey",
     "the hub's SSH host key is not in network.known_hosts (keys are never trusted on "
     "first use: add the hub's key there)"),
    ("Permission denied", "AuthFailed", "the hub refused network.ssh_key"),
    ("Could not resolve hostname", "Offline", "cannot resolve the hub's name"),
    ("Connection refused", "Offline", "connection refused"),
    ("Connection timed out", "Offline", "connection timed out"),
    ("No route to host", "Offline", "no route to the hub"),
    ("Network is unreachable", "Offline", "the network is unreachable"),
    ("Connection reset", "Offline", "connection reset"),
    ("Connection closed", "Offline", "connection closed"),
    ("Timeout, server", "Offline", "the hub stopped answering"),
)


def classify(exc: BaseException, display: str) -> NetworkError:
    """The ``NetworkError`` a transport exception means, naming the hub."""
    from dulwich.client import HTTPProxyUnauthorized, HTTPUnauthorized
    from dulwich.errors import GitProtocolError, HangupException, NotGitRepository

    def err(reason: str, what: str) -> NetworkError:
        return hub_error(f"{display}: {what}", reason)

    if isinstance(exc, NetworkError):
        return exc
    if isinstance(exc, HTTPUnauthorized):
        return err("AuthFailed", "the hub refused our credentials (HTTP 401)")
    if isinstance(exc, HTTPProxyUnauthorized):
        return err("AuthFailed", "a proxy on the way wants credentials (HTTP 407)")
    if isinstance(exc, NotGitRepository):
        return err("RemoteError", "no git repository there")
    if isinstance(exc, HangupException):
        text = "\n".join(line.decode("utf-8", "replace")
                         for line in (getattr(exc, "stderr_lines", None) or []))
        for pattern, reason, what in _SSH_PATTERNS:
            if pattern in text:
                return err(reason, what)
        last = text.strip().splitlines()[-1] if text.strip() else ""
        return err("Offline", f"the connection was cut{': ' + last if last else ''}")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return err("Offline", "timed out")
    if isinstance(exc, socket.gaierror):
        return err("Offline", f"cannot resolve the hub's name ({exc.strerror or exc})")
    if isinstance(exc, OSError):
        return err("Offline", exc.strerror or str(exc) or type(exc).__name__)
    if isinstance(exc, GitProtocolError):
        return _classify_protocol(exc, err)
    return err("Offline", f"{type(exc).__name__}: {exc}")


def _classify_protocol(exc: BaseException, err: Callable[[str, str], NetworkError]
                       ) -> NetworkError:
    """dulwich wraps urllib3's errors in GitProtocolError; look at the cause."""
    import urllib3.exceptions as u3

    cause: BaseException | None = exc.__cause__
    while isinstance(cause, u3.MaxRetryError) and cause.reason is not None:
        cause = cause.reason
    text = str(exc)
    if isinstance(cause, u3.SSLError) or "CERTIFICATE_VERIFY_FAILED" in text:
        return err("TlsVerifyFailed", "the hub's TLS certificate does not verify "
                   f"against the trusted CAs ({cause or text})")
    if isinstance(cause, (u3.TimeoutError, u3.NewConnectionError, u3.ProtocolError,
                          u3.MaxRetryError, OSError)):
        return err("Offline", str(cause))
    if "unexpected http resp 5" in text:
        return err("Offline", f"the hub is failing ({text})")
    if "Connection" in text or "timed out" in text.lower():
        return err("Offline", text)
    return err("RemoteError", f"the hub said: {text}")


# Errors only a local disk raises (a socket never does): a fetch cut short by them is a
# StorageError, reported as such, not an offline hub.
_LOCAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})


@contextlib.contextmanager
def transport_errors(display: str) -> Iterator[None]:
    """Turn anything a transport raises inside the block into a ``NetworkError``.

    The agent's own typed errors (a refused pack, a cap, a lost ref race) pass through.
    Anything else dulwich raises while talking to the hub (a malformed answer can
    surface as ValueError or KeyError deep in the protocol code) is the hub's doing:
    ``RemoteError``, with the exception's type kept in the message and the log.
    """
    from dulwich.client import HTTPProxyUnauthorized, HTTPUnauthorized
    from dulwich.errors import GitProtocolError, NotGitRepository

    try:
        yield
    except GiterError:
        raise
    except OSError as exc:
        if exc.errno in _LOCAL_ERRNOS:  # this device's disk, not the hub: never "offline"
            raise StorageError.of(exc, "the received pack to the state directory") from None
        raise classify(exc, display) from exc
    except (GitProtocolError, HTTPUnauthorized, HTTPProxyUnauthorized,
            NotGitRepository) as exc:
        raise classify(exc, display) from exc
    except Exception as exc:
        log.warning("%s: unexpected %s from the transport", display, type(exc).__name__,
                    exc_info=True)
        raise HubRemoteError(f"{display}: the hub's answer made no sense "
                           f"({type(exc).__name__}: {exc})", reason="RemoteError") from exc
