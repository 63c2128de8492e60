"""A serial cable in software: two pseudo-terminal pairs joined by a relay per direction.

Each end (``line.a``, ``line.b``) is a real tty device that pyserial opens as it would
``/dev/ttyUSB0``. A thread per direction copies bytes from one pty master to the
other and can behave like a real line: pace bytes at a UART's rate (``rate`` bytes/s,
11,520 for 115200 baud 8N1), flip bits at a bit-error rate counted over the ten bits
a byte takes on the wire (a hit on the start or stop bit loses the byte, as a framing
error does), drop bytes, and cut the line (everything in flight is lost both ways, as
when a cable is pulled, until ``restore``).

Used by tests/test_serial_*.py and bench/serial_bench.py.
"""

from __future__ import annotations

import math
import os
import random
import select
import threading
import time
import tty
from dataclasses import dataclass

_WIRE_BITS = 10  # start bit, eight data bits, stop bit
_SLACK_S = 0.01


@dataclass
class DirectionStats:
    relayed: int = 0  # bytes delivered
    bit_errors: int = 0
    dropped: int = 0  # bytes lost to noise or framing errors
    lost_to_cut: int = 0


class _Direction(threading.Thread):
    def __init__(self, line: SerialLine, src: int, dst: int, name: str, seed: int) -> None:
        super().__init__(name=f"serial-line-{name}", daemon=True)
        self.line = line
        self.src = src
        self.dst = dst
        self.rng = random.Random(seed)
        self.stats = DirectionStats()
        self.cut_budget: int | None = None  # bytes to deliver before cutting the line
        self._clock = time.monotonic()
        self._bits_to_error = self._gap(line.ber)
        self._bytes_to_drop = self._gap(line.drop)

    def _gap(self, p: float) -> float:
        """Trials until the next event of probability ``p`` (geometric)."""
        if p <= 0:
            return math.inf
        return math.floor(math.log(1.0 - self.rng.random()) / math.log(1.0 - p)) + 1

    def run(self) -> None:
        line = self.line
        while not line.stopped.is_set():
            ready, _, _ = select.select([self.src], [], [], 0.05)
            if not ready:
                continue
            size = max(1, int(line.rate * 0.01)) if line.rate else 65536
            try:
                chunk = os.read(self.src, size)
            except OSError:  # no slave open at the moment
                time.sleep(0.01)
                continue
            if line.rate:
                # A UART sends at its own pace whether or not anyone listens. The relay's
                # own work between reads must not count as idle line time, so the clock
                # restarts only after a real pause.
                now = time.monotonic()
                self._clock = max(self._clock, now - _SLACK_S) + len(chunk) / line.rate
                if self._clock > now:
                    time.sleep(self._clock - now)
            if line.is_cut:
                self.stats.lost_to_cut += len(chunk)
                continue
            if self.cut_budget is not None:
                if len(chunk) >= self.cut_budget:
                    self.stats.lost_to_cut += len(chunk) - self.cut_budget
                    chunk = chunk[:self.cut_budget]
                    self.cut_budget = None
                    line.cut()
                else:
                    self.cut_budget -= len(chunk)
            chunk = self._noise(chunk)
            self._write(chunk)

    def _noise(self, chunk: bytes) -> bytes:
        line = self.line
        if not line.ber and not line.drop:
            return chunk
        out = bytearray(chunk)
        lost: set[int] = set()
        nbits = len(chunk) * _WIRE_BITS
        while self._bits_to_error <= nbits:
            index, bit = divmod(int(self._bits_to_error) - 1, _WIRE_BITS)
            self.stats.bit_errors += 1
            if bit in (0, _WIRE_BITS - 1):
                lost.add(index)
            else:
                out[index] ^= 1 << (bit - 1)
            self._bits_to_error += self._gap(line.ber)
        self._bits_to_error -= nbits
        while self._bytes_to_drop <= len(chunk):
            lost.add(int(self._bytes_to_drop) - 1)
            self._bytes_to_drop += self._gap(line.drop)
        self._bytes_to_drop -= len(chunk)
        if lost:
            self.stats.dropped += len(lost)
            out = bytearray(b for i, b in enumerate(out) if i not in lost)
        return bytes(out)

    def _write(self, chunk: bytes) -> None:
        while chunk and not self.line.stopped.is_set():
            _, ready, _ = select.select([], [self.dst], [], 0.05)
            if not ready:
                continue
            try:
                n = os.write(self.dst, chunk)
            except BlockingIOError:
                continue
            self.stats.relayed += n
            chunk = chunk[n:]


class SerialLine:
    """A null-modem cable between two pty devices; see the module docstring."""

    def __init__(self, *, rate: float | None = None, ber: float = 0.0, drop: float = 0.0,
                 seed: int = 7) -> None:
        self.rate = rate
        self.ber = ber
        self.drop = drop
        self.stopped = threading.Event()
        self.cut_event = threading.Event()
        self._cut = False
        self._fds: list[int] = []
        ends = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)  # no echo, no line editing before pyserial opens it
            os.set_blocking(master, False)
            self._fds += [master, slave]  # holding the slave keeps the master readable
            ends.append((master, os.ttyname(slave)))
        (ma, self.a), (mb, self.b) = ends
        self.a_to_b = _Direction(self, ma, mb, "a-b", seed)
        self.b_to_a = _Direction(self, mb, ma, "b-a", seed + 1)
        self.a_to_b.start()
        self.b_to_a.start()

    @property
    def is_cut(self) -> bool:
        return self._cut

    def cut(self) -> None:
        """Pull the cable: bytes are lost both ways until ``restore``."""
        self._cut = True
        self.cut_event.set()

    def restore(self) -> None:
        self._cut = False
        self.cut_event.clear()

    def cut_after(self, nbytes: int, direction: str = "a-b") -> None:
        """Cut the line once ``nbytes`` more bytes have gone ``direction``."""
        (self.a_to_b if direction == "a-b" else self.b_to_a).cut_budget = nbytes

    def set_noise(self, *, ber: float | None = None, drop: float | None = None) -> None:
        if ber is not None:
            self.ber = ber
        if drop is not None:
            self.drop = drop
        for d in (self.a_to_b, self.b_to_a):
            d._bits_to_error = d._gap(self.ber)
            d._bytes_to_drop = d._gap(self.drop)

    def close(self) -> None:
        self.stopped.set()
        self.a_to_b.join(2)
        self.b_to_a.join(2)
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> SerialLine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
