"""One file across a real pty line: the sliding window, resume from disk, end-to-end hash.

These drive ``Sender`` and ``Receiver`` directly (the laptop and the device use the
same two classes), so a resume here is also the laptop's resume of a status bundle
from its cache folder.
"""

from __future__ import annotations

import os
import threading

import msgpack
import pytest
import serial
from support.serial_line import SerialLine

from giter_agent.transport.serial.link import OFFER, Link, LinkLost
from giter_agent.transport.serial.offer import Offer
from giter_agent.transport.serial.partial import PartialStore
from giter_agent.transport.serial.transfer import Progress, Receiver, Sender


def run_transfer(line, source, store, *, offer=None, idle=1.0, window=16):
    """Send ``source`` a->b; returns (Sent or exception, Received or exception)."""
    a = serial.Serial(line.a, 115200)
    b = serial.Serial(line.b, 115200)
    box = {}

    def receive():
        link = Link(b, idle_timeout=idle)
        try:
            while (msg := link.recv(0.2)) is None or msg.kind != OFFER:
                pass
            box["received"] = Receiver(link, store, msg, checkpoint_s=0.05).run()
        except LinkLost as exc:
            box["received"] = exc

    thread = threading.Thread(target=receive)
    thread.start()
    sender = Sender(Link(a, idle_timeout=idle), source,
                    offer or Offer.of_file(source, 1, "status"), window=window)
    try:
        box["sent"] = sender.run()
    except LinkLost as exc:
        box["sent"] = exc
    thread.join(10)
    a.close()
    b.close()
    return box["sent"], box["received"], sender


@pytest.mark.parametrize("window", [4, 16, 64])
def test_window_sizes_and_lossy_line(tmp_path, window):
    source = tmp_path / "file.bin"
    source.write_bytes(os.urandom(70_000))
    with SerialLine(drop=2e-5, ber=2e-5, seed=window) as line:
        sent, received, _ = run_transfer(line, source, PartialStore(tmp_path / "in"),
                                         window=window)
    assert sent.outcome == "delivered" and received.path is not None
    assert received.path.read_bytes() == source.read_bytes()


def test_resume_from_the_cache_after_a_cut(tmp_path):
    source = tmp_path / "status.bundle"
    source.write_bytes(os.urandom(50_000))
    cache = PartialStore(tmp_path / "cache" / "pi-01")
    with SerialLine() as line:
        line.cut_after(20_000)
        sent, received, first = run_transfer(line, source, cache)
    assert isinstance(sent, LinkLost) and isinstance(received, LinkLost)
    (state,) = cache.root.glob("*.state")
    raw = msgpack.unpackb(state.read_bytes())
    held = set(range(raw["next"])) | set(raw["extra"])
    assert 10 <= len(held) < 49 and held <= set(first.sent_seqs)
    with SerialLine() as line:  # plugged back in (a fresh process reads the same cache)
        sent, received, second = run_transfer(line, source, PartialStore(cache.root))
    assert received.path.read_bytes() == source.read_bytes()
    assert not set(second.sent_seqs) & held
    assert sent.skipped_bytes == len(held) * 1024
    assert not list(cache.root.glob("*.state")) and not list(cache.root.glob("*.part"))


def test_a_different_file_discards_the_old_partial(tmp_path):
    store = PartialStore(tmp_path / "p")
    old = Offer(1, "spec", "old", 10_000, b"\x01" * 32)
    partial = store.open(old)
    partial.write(0, b"x" * 1024)
    partial.close()
    assert store.open(old).next == 1  # resumes
    store.open(Offer(1, "spec", "new", 10_000, b"\x02" * 32))
    assert not list(store.root.glob("0101*"))


def test_a_damaged_state_file_starts_over(tmp_path):
    store = PartialStore(tmp_path / "p")
    offer = Offer(1, "spec", "f", 5000, b"\x03" * 32)
    partial = store.open(offer)
    partial.write(0, b"y" * 1024)
    partial.close()
    store.state_path(offer.hex).write_bytes(b"\x93garbage")
    assert store.open(offer).next == 0


def test_a_chunk_of_the_wrong_length_is_a_protocol_error(tmp_path):
    from giter_agent.transport.serial.link import ProtocolError

    partial = PartialStore(tmp_path / "p").open(Offer(1, "spec", "f", 3000, b"\x04" * 32))
    with pytest.raises(ProtocolError):
        partial.write(2, b"z" * 1024)  # the last chunk is 952 bytes
    assert partial.write(2, b"z" * 952) and not partial.write(2, b"z" * 952)
    assert not partial.write(3, b"z")  # past the end: ignored
    partial.close()


class _Terminal:
    """A screen ``cols`` wide as a terminal draws it: ``\\r`` to the start of the row,
    ``\\n`` a new row, a character past the edge wraps to a new row."""

    def __init__(self, cols: int) -> None:
        self.cols = cols
        self.rows: list[list[str]] = [[]]
        self.col = 0

    def isatty(self) -> bool:
        return True

    def flush(self) -> None:
        pass

    def write(self, text: str) -> None:
        for ch in text:
            if ch == "\r":
                self.col = 0
            elif ch == "\n":
                self.rows.append([])
                self.col = 0
            else:
                if self.col >= self.cols:
                    self.rows.append([])
                    self.col = 0
                row = self.rows[-1]
                row.extend(" " * (self.col + 1 - len(row)))
                row[self.col] = ch
                self.col += 1

    def lines(self) -> list[str]:
        return ["".join(r).rstrip() for r in self.rows]


@pytest.mark.parametrize("cols", [40, 60, 100])
def test_progress_bar_fits_the_terminal_and_leaves_nothing_behind(cols):
    from giter_bundle.commands.serial import ProgressDisplay
    from giter_bundle.serial_peer import PeerEvent

    screen = _Terminal(cols)
    display = ProgressDisplay(screen, clock=lambda: 0.0, columns=lambda: cols)
    total = 3 * 2**30
    # Long numbers first (GiB left, a fast rate, hours to go), then short ones.
    display(PeerEvent("sending", progress=Progress("spec", 1, total, rate=2**30 * 5)))
    display(PeerEvent("sending", progress=Progress("spec", total // 2, total, rate=900.0)))
    display(PeerEvent("sending", progress=Progress("spec", total, total, rate=None)))
    display.finish()
    lines = [line for line in screen.lines() if line]
    # One row: the bar never wrapped, and the last one drawn is all that is left of it.
    assert len(lines) == 1, lines
    last = display.bar(Progress("spec", total, total, rate=None), cols - 1)[:cols - 1]
    assert lines[0] == last.rstrip()
    assert lines[0].startswith("sending [########") and "] 100%" in lines[0]
