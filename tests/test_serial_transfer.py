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
from giter_agent.transport.serial.transfer import Offer, PartialStore, Receiver, Sender


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
