"""git:// (plain TCP): dulwich's client with a connect timeout and every read budgeted.

dulwich connects git:// sockets with neither a connect nor a read timeout; the class
``tcp_client_class`` builds opens the socket itself and reads it through a
``metered.BudgetedSocket``. Built on first use, once per process, so dulwich loads
only when a sync connects.
"""

from __future__ import annotations

import contextlib
import functools
import select
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from giter_agent.transport.network.metered import BudgetedSocket, Meter

if TYPE_CHECKING:
    from giter_agent.core.budget import Budget


@functools.cache
def tcp_client_class() -> type:
    """dulwich's ``TCPGitClient`` with a connect timeout, a read timeout and a budget."""
    from dulwich.client import TCPGitClient
    from dulwich.protocol import Protocol

    class TimedTCPGitClient(TCPGitClient):
        def __init__(self, host: str, port: int | None, connect_timeout: float,
                     read_timeout: float, display: str = "the hub") -> None:
            super().__init__(host, port=port)
            self._timeouts = (connect_timeout, read_timeout)
            self._display = display
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
            meter = Meter(self.budget, self._display) if self.budget is not None else None
            if meter is not None:
                connect_timeout = meter.wait_s(connect_timeout)
            sock = socket.create_connection((self._host, self._port), timeout=connect_timeout)
            self._sockets = [s for s in self._sockets if s.fileno() != -1] + [sock]
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Every later recv/send: a stalled hub is offline, a slow one out of budget.
            io = BudgetedSocket(sock, read_timeout, meter)

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
