"""The network transport: a dulwich client for the fleet's git server, and its failures.

``open_remote`` turns ``[network]`` into a dulwich client with connect and read
timeouts and a pinned identity: git:// (plain TCP), http(s):// (urllib3; basic auth
whose password or token is read from a file only the agent may read; TLS verified
against the system's CAs or a pinned ``ca_file``) and ssh:// (OpenSSH's client with a
key file and a pinned known_hosts file, never trusting a host key on first use).
``transport_errors`` maps whatever a transport raises into a ``NetworkError`` whose
reason says what a person should do about it.

Every byte a git:// or ssh:// hub sends is read inside the sync's budget (``Budget``, armed by
``Remote.arm``): no read outlives ``time_budget_s`` (a hub sending a byte a second is
cut when the budget ends, not when it pauses), what the hub says before we ask for a
pack (its ref advertisement) is capped at ``MAX_ADVERTISEMENT_BYTES``, and the whole
answer at the bundle cap. A breach is a ``NetworkError`` (``TimeBudgetExceeded``,
``TooLarge``), never a hang or an unbounded dict of refs.

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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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




# What a hub may send before we ask it for a pack: its ref advertisement (protocol v2
# lists only the refs we ask about; even v0 for a fleet of 10 000 devices is ~1 MiB).
MAX_ADVERTISEMENT_BYTES = 8 * 2**20


@dataclass
class Budget:
    """Time and bytes one sync may spend reading from the hub (all its connections).

    ``clock`` is monotonic seconds (injectable); ``deadline`` is on that clock.
    """

    deadline: float
    max_bytes: int
    display: str = "the hub"
    clock: Callable[[], float] = time.monotonic
    max_advertisement: int = MAX_ADVERTISEMENT_BYTES
    received: int = field(default=0, init=False)

    @classmethod
    def start(cls, seconds: float, max_bytes: int, display: str = "the hub",
              clock: Callable[[], float] = time.monotonic) -> Budget:
        return cls(clock() + seconds, max_bytes, display, clock)

    def remaining(self) -> float:
        """Seconds left; ``TimeBudgetExceeded`` when none are."""
        left = self.deadline - self.clock()
        if left <= 0:
            raise NetworkError(f"{self.display}: the hub did not finish within the sync's "
                               "time_budget_s", reason="TimeBudgetExceeded")
        return left

    def take(self, n: int, *, advertising: bool) -> None:
        """Count ``n`` bytes received; ``TooLarge`` past the cap that applies."""
        self.received += n
        cap = self.max_advertisement if advertising else self.max_bytes
        if self.received > cap:
            what = "a ref advertisement" if advertising else "an answer"
            raise NetworkError(f"{self.display}: the hub sent {what} over {cap} bytes",
                               reason="TooLarge")


class BudgetedSocket:
    """``read``/``write`` for dulwich's ``Protocol`` over a socket, inside a ``Budget``.

    Unbuffered: each ``recv`` waits at most the read timeout or what is left of the
    budget, whichever is less, so a trickle of bytes cannot stretch one read. Until
    the client asks for objects (a ``want`` line or ``command=fetch``), what arrives is
    the ref advertisement and falls under its own, smaller cap.
    """

    def __init__(self, sock: socket.socket, read_timeout: float,
                 budget: Budget | None) -> None:
        self.sock = sock
        self.read_timeout = read_timeout
        self.budget = budget
        self.advertising = True

    def read(self, n: int) -> bytes:
        chunks: list[bytes] = []
        got = 0
        while got < n:
            timeout = self.read_timeout
            if self.budget is not None:
                timeout = min(timeout, self.budget.remaining())
            self.sock.settimeout(timeout)
            try:
                chunk = self.sock.recv(min(n - got, 1 << 16))
            except TimeoutError:
                if self.budget is not None:
                    self.budget.remaining()  # raises when it was the budget that ran out
                raise
            if not chunk:
                break
            if self.budget is not None:
                self.budget.take(len(chunk), advertising=self.advertising)
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def write(self, data: bytes) -> None:
        if self.advertising and (b"want " in data or b"command=fetch" in data):
            self.advertising = False
        if self.budget is not None:
            self.sock.settimeout(min(self.read_timeout, self.budget.remaining()))
        self.sock.sendall(data)


class BudgetedPipe:
    """``read`` for dulwich's ``Protocol`` over an ssh client's stdout, inside a ``Budget``.

    Liveness is ssh's own business (keep-alives); what this adds is the sync's budget:
    each wait for bytes ends when the budget does, and every byte counts against the
    caps, the ref advertisement's until the client first asks for objects.
    """

    def __init__(self, fd: int, budget: Budget) -> None:
        self.fd = fd
        self.budget = budget
        self.advertising = True
        self.unused: Any = None

    def read(self, n: int) -> bytes:
        chunks: list[bytes] = []
        got = 0
        while got < n:
            ready, _, _ = select.select([self.fd], [], [], self.budget.remaining())
            if not ready:
                continue  # the budget ran out while waiting: remaining() raises
            chunk = os.read(self.fd, min(n - got, 1 << 16))
            if not chunk:
                break
            self.budget.take(len(chunk), advertising=self.advertising)
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def watch(self, write: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
        """``write``, noting when the client first asks for objects."""
        def watched(data: bytes) -> Any:
            if self.advertising and (b"want " in data or b"command=fetch" in data):
                self.advertising = False
            return write(data)
        return watched


@dataclass
class Remote:
    """A connected-on-demand dulwich client and the path to the repository on it."""

    client: Any
    path: str
    display: str  # the URL as logs and reports show it (never holds a secret)

    def arm(self, seconds: float, max_bytes: int) -> None:
        """Bound every later read from the hub by one ``Budget`` (git:// and ssh://)."""
        budget = Budget.start(seconds, max_bytes, self.display)
        holders: tuple[Any, ...] = (self.client, getattr(self.client, "ssh_vendor", None))
        for holder in holders:
            if hasattr(holder, "budget"):
                holder.budget = budget

    def close(self) -> None:
        self.client.close()
        vendor = getattr(self.client, "ssh_vendor", None)
        if isinstance(vendor, PinnedSSH):
            vendor.close()


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
            self.budget: Budget | None = None  # Remote.arm: the sync's time and bytes
            # dulwich closes a connection only once it has read the first line; one
            # cut before that (a budget, a cap) is closed here, by Remote.close.
            self._sockets: list[socket.socket] = []

        def close(self) -> None:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()
            super().close()

        def _connect(self, cmd: bytes, path: str | bytes,
                     protocol_version: int | None = None) -> tuple[Any, Callable[[], bool], None]:
            connect_timeout, read_timeout = self._timeouts
            raw_path = path.encode() if isinstance(path, str) else path
            budget = self.budget
            if budget is not None:
                connect_timeout = min(connect_timeout, budget.remaining())
            sock = socket.create_connection((self._host, self._port), timeout=connect_timeout)
            self._sockets = [s for s in self._sockets if s.fileno() != -1] + [sock]
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Every later recv/send: a stalled hub is offline, a slow one out of budget.
            io = BudgetedSocket(sock, read_timeout, budget)

            def shutdown_write() -> None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)

            proto = Protocol(io.read, io.write, sock.close,
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
            pipe = BudgetedPipe(proc.stdout.fileno(), self.budget)
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

    cause: BaseException | None = exc
    while cause is not None:
        # Our own verdict (a budget, a cap) even when dulwich wrapped it on the way out.
        if isinstance(cause, NetworkError):
            return cause
        cause = cause.__cause__
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
