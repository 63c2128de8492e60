"""Reads from a hub, each inside the sync's one ``Budget``: a socket, an ssh pipe, a TLS stream.

Every transport reads the hub through one of these: git:// through ``BudgetedSocket``,
ssh:// through ``BudgetedPipe`` (the ssh client's stdout), http(s):// through
``BudgetedSocketFile`` (the file http.client parses the response from). Each wait for
bytes ends at the read timeout or when the sync's budget does, whichever is sooner, so a
hub sending a byte a second is cut when the budget ends, not when it pauses; and every
byte counts against the caps through a ``Meter``.

A ``Meter`` is one connection's (or one HTTP request's) account: all bytes go to the
sync's ``Budget`` (``max_bundle_mib`` over the whole sync), and those that arrive before
the client first asks for objects (the ref advertisement) also to a small cap of their
own, counted per connection: a hub cannot grow the agent by advertising refs without
end, and a large pack fetched first does not eat a later push's allowance.
"""

from __future__ import annotations

import io
import os
import select
import socket
from collections.abc import Callable
from typing import Any

from giter_agent.core.budget import Budget
from giter_agent.core.errors import NetworkError

# What a hub may send before we ask it for a pack: its ref advertisement (protocol v2
# lists only the refs we ask about; even v0 for a fleet of 10 000 devices is ~1 MiB).
MAX_ADVERTISEMENT_BYTES = 8 * 2**20


def asks_for_objects(data: bytes) -> bool:
    """Is ``data`` (what the client sends) a request for objects, ending the advertisement?"""
    return b"want " in data or b"command=fetch" in data


class Meter:
    """What one connection received from ``peer``, against the sync's ``budget``."""

    def __init__(self, budget: Budget, peer: str, *, advertising: bool = True,
                 max_advertisement: int = MAX_ADVERTISEMENT_BYTES) -> None:
        self.budget = budget
        self.peer = peer
        self.advertising = advertising
        self.max_advertisement = max_advertisement
        self.advertised = 0  # bytes of this connection's ref advertisement
        self.breach: NetworkError | None = None  # the verdict, once a cap or the time ran out

    def wait_s(self, read_timeout: float = float("inf")) -> float:
        """How long the next wait for bytes may last (TimeBudgetExceeded when none)."""
        try:
            return min(read_timeout, self.budget.wait_s(self.peer))
        except NetworkError as exc:
            self.breach = exc
            raise

    def took(self, n: int) -> None:
        """Count ``n`` bytes received; TooLarge past the cap that applies."""
        try:
            self.budget.receive(n, self.peer)
            if self.advertising:
                self.advertised += n
                if self.advertised > self.max_advertisement:
                    raise NetworkError(f"{self.peer}: the hub sent a ref advertisement over "
                                       f"{self.max_advertisement} bytes", reason="TooLarge")
        except NetworkError as exc:
            self.breach = exc
            raise

    def sent(self, data: bytes) -> None:
        """Note what the client sends: its first request for objects ends the advertisement."""
        if self.advertising and asks_for_objects(data):
            self.advertising = False


class BudgetedSocket:
    """``read``/``write`` for dulwich's ``Protocol`` over a socket, inside a ``Meter``.

    Unbuffered: each ``recv`` waits at most the read timeout or what is left of the
    budget, whichever is less, so a trickle of bytes cannot stretch one read.
    """

    def __init__(self, sock: socket.socket, read_timeout: float, meter: Meter | None) -> None:
        self.sock = sock
        self.read_timeout = read_timeout
        self.meter = meter

    def read(self, n: int) -> bytes:
        chunks: list[bytes] = []
        got = 0
        while got < n:
            chunk = self.recv(min(n - got, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def recv(self, n: int) -> bytes:
        """One ``recv`` of at most ``n`` bytes, inside the budget and counted."""
        meter = self.meter
        self.sock.settimeout(meter.wait_s(self.read_timeout) if meter else self.read_timeout)
        try:
            chunk = self.sock.recv(n)
        except TimeoutError:
            if meter is not None:
                meter.wait_s()  # raises when it was the budget that ran out
            raise
        if meter is not None and chunk:
            meter.took(len(chunk))
        return chunk

    def write(self, data: bytes) -> None:
        if self.meter is not None:
            self.meter.sent(data)
            self.sock.settimeout(self.meter.wait_s(self.read_timeout))
        self.sock.sendall(data)


class BudgetedSocketFile(io.RawIOBase):
    """A raw, read-only file over a (TLS) socket whose every ``recv`` is a ``BudgetedSocket``'s.

    http.client reads an HTTP response (status line, headers, body, chunk sizes) from a
    buffered file over the socket; this is that file's raw layer, so not one byte of a
    response is read outside the budget. ``meter()`` gives the account of the request
    being answered (None: unbudgeted, only the read timeout applies). ``holds`` is closed
    with it: a ``socket.makefile`` reader, which keeps a socket closed meanwhile by its
    connection open until the response is read, as http.client expects.
    """

    def __init__(self, sock: socket.socket, read_timeout: float,
                 meter: Callable[[], Meter | None], holds: io.IOBase | None = None) -> None:
        super().__init__()
        self._sock = sock
        self._read_timeout = read_timeout
        self._meter = meter
        self._holds = holds  # closed with this file (a makefile reference to the socket)

    def close(self) -> None:
        if self._holds is not None:
            self._holds.close()
            self._holds = None
        super().close()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        chunk = BudgetedSocket(self._sock, self._read_timeout, self._meter()).recv(len(view))
        view[:len(chunk)] = chunk
        return len(chunk)


class BudgetedPipe:
    """``read`` for dulwich's ``Protocol`` over an ssh client's stdout, inside a ``Meter``.

    Liveness is ssh's own business (keep-alives); what this adds is the sync's budget:
    each wait for bytes ends when the budget does, and every byte counts against the
    caps, the ref advertisement's until the client first asks for objects.
    """

    def __init__(self, fd: int, meter: Meter) -> None:
        self.fd = fd
        self.meter = meter
        self.unused: Any = None

    def read(self, n: int) -> bytes:
        chunks: list[bytes] = []
        got = 0
        while got < n:
            ready, _, _ = select.select([self.fd], [], [], self.meter.wait_s())
            if not ready:
                continue  # the budget ran out while waiting: wait_s() raises
            chunk = os.read(self.fd, min(n - got, 1 << 16))
            if not chunk:
                break
            self.meter.took(len(chunk))
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def watch(self, write: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
        """``write``, noting when the client first asks for objects."""
        def watched(data: bytes) -> Any:
            self.meter.sent(data)
            return write(data)
        return watched
