"""Benchmark: serial goodput as a fraction of the line rate, clean and with bit errors.

Two pseudo-terminal pairs are joined by a relay (tests/support/serial_line.py) that paces bytes
at a UART's rate (115200 baud 8N1 carries at most 11,520 bytes/s: ten bits per byte)
and injects bit errors over the ten bits each byte takes on the wire (a hit on a start
or stop bit loses the byte). The agent's ``Sender`` pushes a file of random bytes
(a pack is compressed: random is what a bundle looks like to the line) through
``giter_agent.transport.serial.transfer`` with the default chunk and window to a ``Receiver`` that
writes it to disk and checks its SHA-256. Goodput is file bytes over the time from
the OFFER to the verified DONE, so the handshake, every resend, the tail probe and the
end-to-end hash all count against it.

Run from the repository root:  python3 bench/serial_bench.py [--size 524288] [--ber 1e-5]
The numbers go into docs/performance.md, "Serial transfer". Run it on a quiet machine:
the relay is a Python thread, and a starved relay undercounts the line.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import serial
from support.serial_line import SerialLine

from giter_agent.transport.serial.link import OFFER, Link
from giter_agent.transport.serial.offer import CHUNK, Offer
from giter_agent.transport.serial.partial import PartialStore
from giter_agent.transport.serial.transfer import WINDOW, Receiver, Sender

LINE_RATE = 11520.0  # bytes/s at 115200 baud, 8N1


def measure(size: int, ber: float, *, chunk: int, window: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="serial-bench-") as tmp:
        source = Path(tmp) / "bundle.bin"
        source.write_bytes(os.urandom(size))
        store = PartialStore(Path(tmp) / "received")
        with SerialLine(rate=LINE_RATE, ber=ber, seed=seed) as line:
            a = serial.Serial(line.a, 115200)
            b = serial.Serial(line.b, 115200)
            box: dict = {}

            def receive() -> None:
                link = Link(b, idle_timeout=30)
                while (msg := link.recv(0.5)) is None or msg.kind != OFFER:
                    pass
                box["received"] = Receiver(link, store, msg).run()
                box["bad_frames"] = link.decoder.stats.bad_frames

            thread = threading.Thread(target=receive, daemon=True)
            thread.start()
            offer = Offer.of_file(source, 1, "spec", chunk=chunk)
            sender = Sender(Link(a, idle_timeout=30), source, offer, window=window,
                            line_rate=LINE_RATE)
            started = time.monotonic()
            sent = sender.run()
            seconds = time.monotonic() - started
            thread.join(30)
            a.close()
            b.close()
            wire = line.a_to_b.stats
            received = box["received"]
            ok = (received.path is not None
                  and hashlib.sha256(received.path.read_bytes()).digest() == offer.sha256)
        chunks = -(-size // chunk)
        return {"ber": ber, "seconds": seconds, "goodput": size / seconds,
                "fraction": size / seconds / LINE_RATE, "chunks": chunks,
                "resent": len(sent.sent_seqs) - chunks, "bit_errors": wire.bit_errors,
                "wire_bytes": wire.relayed + wire.dropped, "bad_frames": box["bad_frames"],
                "verified": ok}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=512 * 1024, help="bytes to send (512 KiB)")
    p.add_argument("--ber", type=float, action="append",
                   help="bit-error rate(s) to run (default: 0 and 1e-5)")
    p.add_argument("--chunk", type=int, default=CHUNK)
    p.add_argument("--window", type=int, default=WINDOW)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    rates = args.ber if args.ber else [0.0, 1e-5]
    print(f"machine:  {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, pyserial {serial.VERSION}")
    print(f"line:     {LINE_RATE:.0f} B/s (115200 baud 8N1) through a paced pty relay")
    print(f"transfer: {args.size} random bytes, chunk {args.chunk} B, window {args.window}")
    failed = False
    for ber in rates:
        r = measure(args.size, ber, chunk=args.chunk, window=args.window, seed=args.seed)
        measured = r["bit_errors"] / (r["wire_bytes"] * 10) if r["wire_bytes"] else 0.0
        print(f"BER {ber:<7g} goodput {r['goodput']:7.0f} B/s = {r['fraction']:6.1%} of the "
              f"line  ({r['seconds']:.1f} s; {r['bit_errors']} bit errors injected = "
              f"{measured:.1e}, {r['bad_frames']} bad frames, {r['resent']} of "
              f"{r['chunks']} chunks resent; SHA-256 {'ok' if r['verified'] else 'WRONG'})")
        failed = failed or not r["verified"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
