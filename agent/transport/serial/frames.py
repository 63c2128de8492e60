"""Frames on a serial line: COBS byte stuffing, a CRC-32 trailer, ``0x00`` delimiters.

A frame on the wire is ``COBS(payload + CRC-32(payload)) + b"\\x00"``. COBS removes
every zero byte from the encoded body, so ``0x00`` marks frame ends and nothing else:
a receiver that joins the line in the middle of a frame, or sees garbage, a dropped
byte or a flipped bit, loses at most the frame it was in and picks up at the next
zero. The overhead is at most one byte in 254 plus the delimiter and the CRC.

Called by ``transport.serial.link`` (both ends of the protocol). Nothing here knows what
the payload means.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

DELIMITER = b"\x00"
CRC_BYTES = 4
# The largest payload either side sends: a data chunk of at most 4 KiB plus its header,
# or a control message. Anything longer between two delimiters is garbage (a console
# line, a wrong baud rate, another device) and is thrown away without buffering it.
MAX_PAYLOAD = 8192
MAX_ENCODED = MAX_PAYLOAD + CRC_BYTES + (MAX_PAYLOAD + CRC_BYTES) // 254 + 2
# How much garbage to keep for an error message ("wrong port or baud rate?").
SAMPLE_BYTES = 48


class FrameError(ValueError):
    """One received frame is unusable (bad stuffing or checksum); the next may be fine."""


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: ``data`` without any zero byte, reversibly."""
    out = bytearray()
    # Every zero in ``data`` ends a run; each run becomes blocks of at most 254 bytes
    # led by a code byte (block length + 1). Code 0xFF means "254 bytes, no zero after".
    for run in data.split(b"\x00"):
        while len(run) >= 254:
            out.append(0xFF)
            out += run[:254]
            run = run[254:]
        out.append(len(run) + 1)
        out += run
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Invert ``cobs_encode``; raise ``FrameError`` on anything it could not have made."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise FrameError("zero byte inside a COBS frame")
        end = i + code
        if end > n:
            raise FrameError("COBS block runs past the end of the frame")
        out += data[i + 1:end]
        i = end
        if code < 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode_frame(payload: bytes) -> bytes:
    """``payload`` as it goes on the wire, delimiter included."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"frame payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    body = payload + zlib.crc32(payload).to_bytes(CRC_BYTES, "big")
    return cobs_encode(body) + DELIMITER


def decode_frame(encoded: bytes) -> bytes:
    """The payload of one frame (without its delimiter), checked against its CRC."""
    body = cobs_decode(encoded)
    if len(body) < CRC_BYTES:
        raise FrameError("frame shorter than its checksum")
    payload, crc = body[:-CRC_BYTES], body[-CRC_BYTES:]
    if zlib.crc32(payload).to_bytes(CRC_BYTES, "big") != crc:
        raise FrameError("CRC-32 mismatch")
    return payload


@dataclass
class FrameStats:
    """What the decoder saw: good frames, bad frames, and bytes that were no frame."""

    frames: int = 0
    bad_frames: int = 0
    garbage_bytes: int = 0
    sample: bytearray = field(default_factory=bytearray)  # the first garbage, for errors

    def note_garbage(self, data: bytes) -> None:
        self.garbage_bytes += len(data)
        room = SAMPLE_BYTES - len(self.sample)
        if room > 0:
            self.sample += data[:room]


class FrameDecoder:
    """Turn a byte stream into checked payloads, resynchronising on every ``0x00``."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overlong = False  # inside a run longer than any frame: skip to the next zero
        self.stats = FrameStats()

    def unframed(self) -> tuple[int, bytes]:
        """Bytes seen that made no frame (counting a run not yet ended), and a sample."""
        sample = bytes(self.stats.sample) or bytes(self._buf[:SAMPLE_BYTES])
        return self.stats.garbage_bytes + len(self._buf), sample

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the payloads of the frames they completed."""
        payloads: list[bytes] = []
        start = 0
        while True:
            end = data.find(DELIMITER, start)
            if end < 0:
                self._append(data[start:])
                return payloads
            self._append(data[start:end])
            self._finish(payloads)
            start = end + 1

    def _append(self, piece: bytes) -> None:
        if not piece:
            return
        if self._overlong:
            self.stats.note_garbage(piece)
            return
        self._buf += piece
        if len(self._buf) > MAX_ENCODED:
            self.stats.note_garbage(bytes(self._buf))
            self._buf.clear()
            self._overlong = True

    def _finish(self, payloads: list[bytes]) -> None:
        encoded = bytes(self._buf)
        self._buf.clear()
        if self._overlong:
            self._overlong = False
            return
        if not encoded:
            return  # back-to-back delimiters: a resync marker, not a frame
        try:
            payloads.append(decode_frame(encoded))
            self.stats.frames += 1
        except FrameError:
            self.stats.bad_frames += 1
            self.stats.note_garbage(encoded)
