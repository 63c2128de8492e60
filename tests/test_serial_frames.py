"""Framing and message checks for the serial protocol: no ports needed here."""

from __future__ import annotations

import os
import random

import pytest

from giter_agent.transport.serial.frames import (
    MAX_ENCODED,
    FrameDecoder,
    FrameError,
    cobs_decode,
    cobs_encode,
    encode_frame,
)
from giter_agent.transport.serial.link import (
    ACK,
    DATA,
    HELLO,
    ProtocolError,
    ack,
    control,
    data,
    pack,
    unpack,
)


@pytest.mark.parametrize("raw, encoded", [
    (b"", b"\x01"),
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
])
def test_cobs_known_vectors(raw, encoded):
    assert cobs_encode(raw) == encoded
    assert cobs_decode(encoded) == raw


@pytest.mark.parametrize("size", [1, 253, 254, 255, 508, 509, 4000])
def test_cobs_round_trip_without_zero_bytes(size):
    rng = random.Random(size)
    for sample in (os.urandom(size), bytes(rng.choice((0, 1, 0xFF)) for _ in range(size)),
                   bytes(range(1, 256)) * (size // 255 + 1)):
        encoded = cobs_encode(sample)
        assert b"\x00" not in encoded
        assert cobs_decode(encoded) == sample
        assert len(encoded) <= len(sample) + len(sample) // 254 + 2


def test_cobs_decode_refuses_what_encode_cannot_make():
    with pytest.raises(FrameError):
        cobs_decode(b"\x05ab")  # block runs past the end
    with pytest.raises(FrameError):
        cobs_decode(b"\x02a\x00")  # a zero inside


def test_decoder_resynchronises_after_garbage_and_flipped_bits():
    frames = [encode_frame(os.urandom(300)) for _ in range(4)]
    payloads = [cobs_decode(f[:-1])[:-4] for f in frames]
    damaged = bytearray(frames[1])
    # One flipped bit, never one that makes a zero: that would be a delimiter, two frames.
    damaged[50] ^= 0x10 if damaged[50] != 0x10 else 0x01
    stream = (b"login: root\r\n" + frames[0] + bytes(damaged) + b"\x00\x00" + frames[2]
              + os.urandom(40).replace(b"\x00", b"\x01") + b"\x00" + frames[3])
    decoder = FrameDecoder()
    got = []
    for i in range(0, len(stream), 7):  # bytes arrive in dribs and drabs
        got += decoder.feed(stream[i:i + 7])
    # The first frame had console text glued to its front, the second a flipped bit.
    assert got == payloads[2:]
    assert decoder.stats.frames == 2 and decoder.stats.bad_frames == 3
    count, sample = decoder.unframed()
    assert sample.startswith(b"login: root") and count > 600


def test_decoder_drops_endless_garbage_without_buffering_it():
    decoder = FrameDecoder()
    junk = b"A" * (3 * MAX_ENCODED)
    assert decoder.feed(junk) == []
    assert len(decoder._buf) <= MAX_ENCODED
    good = encode_frame(b"after")
    assert decoder.feed(b"\x00" + good) == [b"after"]
    assert decoder.unframed()[0] >= len(junk)


def test_messages_round_trip_and_are_checked():
    hello = control(HELLO, proto=1, role="peer", nonce=7, spec=None)
    assert unpack(pack(hello)) == hello
    assert unpack(pack(data(3, 9, b"xyz"))).body == (3, 9, b"xyz")
    assert unpack(pack(ack(3, 10, 0b101, 4))).kind == ACK
    import msgpack

    for bad in (msgpack.packb([HELLO, {"proto": True, "role": "peer", "nonce": 1}]),
                msgpack.packb([HELLO, {"proto": 1, "role": "peer"}]),
                msgpack.packb([DATA, 1, -2, b""]),
                msgpack.packb([99, {}]),
                msgpack.packb({"not": "a list"}),
                b"\xc1"):
        with pytest.raises(ProtocolError):
            unpack(bad)
