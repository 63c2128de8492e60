"""Benchmark: what a 1 % change to a 32 MiB artifact costs over the wire.

A repository holds ``artifacts/app.bin`` (32 MiB of random bytes: compressed firmware
looks like that to zlib), then a second commit changes 1 % of it, in one of two shapes:

- ``spread``: 40 bytes rewritten in every 4 KiB (a rebuilt image, many small edits);
- ``region``: one contiguous run of 1 % rewritten (a patched section).

For each, the incremental bundle from the first commit to the second is written three
ways: by ``git bundle create`` (the reference: ``pack-objects --thin`` deltifies), by
``History.write_bundle`` as ``giter-bundle create`` calls it (``deltify_artifacts``),
and by the same without deltas (what it wrote before). Each is checked by ``git fetch``
into a clone that holds the first commit, and compared with the full artifact.

The serial time is each bundle's size over the goodput of the agent's serial transfer
measured in this run: ``bench/serial_bench.py``'s paced pty line at 115200 baud 8N1
(11,520 B/s at most) carrying ``--sample`` random bytes (default 128 KiB) from OFFER to
verified DONE.

Run from the repository root:  python3 bench/artifact_delta_bench.py [--mib 32]
[--sample 131072]. The numbers go into docs/performance.md, "Artifacts over the wire".
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serial_bench import LINE_RATE, measure  # the paced line and the transfer

from giter_agent.history.store import History
from giter_agent.transport.serial.offer import CHUNK
from giter_agent.transport.serial.transfer import WINDOW

MiB = 2**20


def git(*args: str | Path, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *map(str, args)], cwd=cwd, check=True,
                          capture_output=True).stdout.decode().strip()


def change(data: bytearray, shape: str, rnd: random.Random) -> None:
    if shape == "spread":
        for at in range(0, len(data) - 40, 4096):
            data[at:at + 40] = rnd.randbytes(40)
    else:
        run = len(data) // 100
        at = rnd.randrange(len(data) - run)
        data[at:at + run] = rnd.randbytes(run)


def build(root: Path, mib: int, shape: str) -> str:
    """The repository; returns the first commit (what the device holds)."""
    rnd = random.Random(7)
    git("init", "-q", "-b", "main", root)
    (root / "artifacts").mkdir()
    data = bytearray(rnd.randbytes(mib * MiB))
    (root / "artifacts/app.bin").write_bytes(data)
    git("add", "-A", cwd=root)
    git("-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "v1", cwd=root)
    first = git("rev-parse", "HEAD", cwd=root)
    change(data, shape, rnd)
    (root / "artifacts/app.bin").write_bytes(data)
    git("-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qam", "v2", cwd=root)
    return first


def fetch_checks(root: Path, first: str, bundle: Path, work: Path) -> None:
    """git takes the bundle in a clone at the first commit and gets the new artifact."""
    clone = work / f"clone-{bundle.stem}"
    git("clone", "-q", "--bare", "--single-branch", root, clone)
    git("update-ref", "refs/heads/main", first, cwd=clone)
    git("fetch", "-q", bundle, "main:main", cwd=clone)
    want = git("rev-parse", "main:artifacts/app.bin", cwd=root)
    assert git("rev-parse", "main:artifacts/app.bin", cwd=clone) == want


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mib", type=int, default=32, help="artifact size (32 MiB)")
    p.add_argument("--sample", type=int, default=128 * 1024,
                   help="bytes sent over the serial line to measure its goodput")
    args = p.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, {git('--version')}")
    serial = measure(args.sample, 0.0, chunk=CHUNK, window=WINDOW, seed=1)
    assert serial["verified"]
    goodput = serial["goodput"]
    print(f"serial:  {goodput:.0f} B/s goodput = {serial['fraction']:.1%} of 115200 baud "
          f"8N1 ({LINE_RATE:.0f} B/s), measured over {args.sample} bytes in "
          f"{serial['seconds']:.1f} s")

    def line(label: str, size: int, seconds: float | None = None) -> str:
        made = f"  made in {seconds:5.1f} s" if seconds is not None else ""
        return (f"  {label:<38} {size:>11,} B  {size / (args.mib * MiB):7.2%} of the "
                f"artifact  serial {size / goodput / 60:7.1f} min{made}")

    with tempfile.TemporaryDirectory(prefix="artifact-delta-") as tmp:
        work = Path(tmp)
        for shape in ("spread", "region"):
            root = work / shape
            first = build(root, args.mib, shape)
            print(f"== {args.mib} MiB artifact, 1 % changed ({shape})")
            print(line("the artifact itself", args.mib * MiB))
            ref = work / f"{shape}-git.bundle"
            git("branch", "-f", "v1", first, cwd=root)
            started = time.monotonic()
            git("bundle", "create", "-q", ref, "v1..main", cwd=root)
            git_s = time.monotonic() - started
            ours, plain = work / f"{shape}-ours.bundle", work / f"{shape}-plain.bundle"
            with History(root / ".git") as history:
                tip = history.ref(b"refs/heads/main")
                assert tip is not None
                started = time.monotonic()
                history.write_bundle(ours, {b"refs/heads/main": tip}, exclude=[first.encode()],
                                     deltify_artifacts=True)
                ours_s = time.monotonic() - started
                started = time.monotonic()
                history.write_bundle(plain, {b"refs/heads/main": tip},
                                     exclude=[first.encode()])
                plain_s = time.monotonic() - started
            for bundle in (ref, ours, plain):
                fetch_checks(root, first, bundle, work)
            print(line("git bundle create v1..main", ref.stat().st_size, git_s))
            print(line("giter-bundle create (deltas)", ours.stat().st_size, ours_s))
            print(line("giter-bundle create, no deltas", plain.stat().st_size, plain_s))
            print(f"  ours / git: {ours.stat().st_size / ref.stat().st_size:.2f} x the bytes")


if __name__ == "__main__":
    main()
