"""Is every parser of unsigned input linear? Time each at N and 2N; print the ratio.

Run by hand (not a timed test): ``python3 bench/parser_bench.py [--n 200000]``. A ratio
near 2 is linear, near 4 quadratic. Inputs are the hostile shapes: a commit with N
one-character ``gpgsig`` continuation lines (the quadratic case this bench was written
for), N parent lines, a bundle header of N refs, a pack of N tiny objects, one large
``read_all`` through the pack gate, an N-line commit message for the Expires: trailer,
and an N-line YAML resource. The figures go into docs/performance.md, "Parsers".
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import sys
import time
import zlib
from collections.abc import Callable

from giter_agent.core.errors import GiterError
from giter_agent.history import bundle, commit_layout
from giter_agent.spec.resources import MAX_DOCUMENT_BYTES, load_yaml
from giter_agent.trust import trailers as trust

IDENT = b"a <a@example.invalid> 1700000000 +0000"
TREE = b"tree " + b"1" * 40 + b"\n"


def gpgsig_lines(n: int) -> bytes:
    return (TREE + b"author " + IDENT + b"\ncommitter " + IDENT + b"\ngpgsig x\n"
            + b" y\n" * n + b"\nmessage\n")


def parent_lines(n: int) -> bytes:
    return (TREE + b"parent " + b"2" * 40 + b"\n") * 1 + (b"parent " + b"3" * 40 + b"\n") * n \
        + b"author " + IDENT + b"\ncommitter " + IDENT + b"\n\nmessage\n"


def header_refs(n: int) -> bytes:
    return (b"# v2 git bundle\n" + b"".join(b"1" * 40 + b" refs/tags/t%d\n" % i for i in range(n))
            + b"\n")


def tiny_objects(n: int) -> bytes:
    one = bytes([0x31]) + zlib.compress(b"x")  # blob of 1 byte
    body = b"PACK" + (2).to_bytes(4, "big") + n.to_bytes(4, "big") + one * n
    return body + hashlib.sha1(body).digest()


def message_lines(n: int) -> bytes:
    return b"subject\n\n" + b"Line: x\n" * n + b"Expires: 2030-01-01T00:00:00Z\n"


def parse_commit(raw: bytes) -> None:
    with contextlib.suppress(GiterError):  # the gpgsig case is refused, after parsing
        commit_layout.parse_layout(raw)


def scan_pack(pack: bytes) -> None:
    scanner = bundle.PackScanner(max_objects=10**7, max_object_bytes=1 << 20)
    for i in range(0, len(pack), 65536):
        scanner.feed(pack[i:i + 65536])
    scanner.finish()


def gate_read_all(size: int) -> None:
    pack = bytes([0x30 | 0x80 | (size & 0x0F)])  # a whole blob of ``size`` bytes
    rest = size >> 4
    header = bytearray()
    while rest:
        header.append((rest & 0x7F) | (0x80 if rest >> 7 else 0))
        rest >>= 7
    body = (b"PACK" + (2).to_bytes(4, "big") + (1).to_bytes(4, "big") + pack + bytes(header)
            + zlib.compress(b"\0" * size))
    body += hashlib.sha1(body).digest()
    reader = bundle.GatedPackReader(io.BytesIO(body), len(body),
                                    bundle.PackScanner(max_objects=1, max_object_bytes=size),
                                    chunk_size=4096)
    reader.read_all(len(body) - 20)


def yaml_lines(n: int) -> bytes:
    return b"a:\n" + b"- 1\n" * n


CASES: list[tuple[str, Callable[[int], object], Callable[[object], None], float]] = [
    ("commit: N gpgsig continuation lines", gpgsig_lines, parse_commit, 1.0),
    ("commit: N parent lines", parent_lines, parse_commit, 0.25),
    ("bundle header: N refs (cap lifted)", header_refs,
     lambda d: bundle.read_header(io.BytesIO(d), max_header_bytes=1 << 30), 0.25),
    ("pack scanner: N one-byte objects", tiny_objects, scan_pack, 0.25),
    ("pack gate: one read_all of N*64 bytes", lambda n: n * 64, gate_read_all, 1.0),
    ("commit message: N lines before Expires:", message_lines,
     lambda d: trust.expires_of(d), 1.0),
    ("resource YAML: N list items", lambda n: min(n, MAX_DOCUMENT_BYTES // 4 - 8),
     lambda n: load_yaml(yaml_lines(n)), 0.1),
]


def timed(make: Callable[[int], object], run: Callable[[object], None], n: int) -> float:
    data = make(n)
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        run(data)
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}; N = {args.n} (scaled per case); best of 3")
    print(f"{'case':44} {'N':>8} {'t(N) s':>9} {'t(2N) s':>9} {'ratio':>6}")
    for name, make, run, scale in CASES:
        n = max(1, int(args.n * scale))
        if name.startswith("resource"):
            n = min(n, (MAX_DOCUMENT_BYTES - 8) // 8)
        one, two = timed(make, run, n), timed(make, run, 2 * n)
        print(f"{name:44} {n:8d} {one:9.4f} {two:9.4f} {two / max(one, 1e-9):6.2f}")


if __name__ == "__main__":
    main()
