"""A really full disk (not an injected error): the state directory's, then the stick's.

The device lives on a small loop-mounted ext4 image (tests/support/powercut.py) filled to the
last block; the stick's outbox on a tmpfs with no room for a new bundle. The sync must
end in one typed line (exit 1), keep the last good spec applied and reported, leave
nothing half-written, and the next sync once space is freed must converge
(tests/support/deathtest.py). Needs root and loop devices; skips elsewhere, saying why.
"""

from __future__ import annotations

import contextlib
import os
import subprocess

import pytest
from support.deathtest import DEVICE, Case, Outcome
from support.powercut import Disk, unavailable


@pytest.fixture
def disk(tmp_path):
    why = unavailable("ext4")
    if why:
        pytest.skip(f"a full filesystem image: {why}")
    d = Disk(tmp_path, tmp_path / "mnt", "ext4").make()
    yield d
    d.close()


def fill(directory) -> None:
    """Take every free block of ``directory``'s filesystem (MiB chunks, then bytes)."""
    for name, chunk in (("filler", 2**20), ("filler-small", 512)):
        with contextlib.suppress(OSError):
            fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            finally:
                with contextlib.suppress(OSError):
                    os.fsync(fd)
                os.close(fd)


def test_a_full_state_disk_keeps_the_last_good_spec_and_recovers(disk, tmp_path):
    case = Case(tmp_path / "case", "incremental", live=disk.mountpoint).setup()
    try:
        case.restore()
        fill(disk.mountpoint)
        proc = case.sync()
        err = proc.stderr.decode()
        assert proc.returncode == 1, err
        assert "Traceback" not in err
        assert err.strip().splitlines()[-1].startswith("giter-agent: DiskFull: cannot write ")
        assert case.status_json()["appliedCommit"] == case.old_applied
        assert case.outbox_bundle.read_bytes() == case.old_bundle
        for name in ("filler", "filler-small"):
            (disk.mountpoint / name).unlink(missing_ok=True)
        outcome = case._converge(Outcome("incremental", "disk", "full", 0, proc.returncode),
                                 "ENOSPC")
        assert outcome.converged, outcome.line()
    finally:
        case.close()


def test_a_full_stick_keeps_its_old_status_and_the_next_sync_writes_it(disk, tmp_path):
    case = Case(tmp_path / "case", "incremental", live=disk.mountpoint).setup()
    outbox = case.stick / "giter/outbox"
    try:
        case.restore()
        old = {p.name: p.read_bytes() for p in outbox.iterdir()}
        # The stick is one filesystem (the agent refuses an outbox on another one): a
        # tmpfs over the whole stick, holding what it held, with hardly any room more.
        stick = case.stick
        held = {p.relative_to(stick): p.read_bytes() for p in stick.rglob("*") if p.is_file()}
        size = (sum(len(d) for d in held.values()) // 4096 + len(held) + 8) * 4096
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(stick)],
                       check=True)
        try:
            for rel, data in held.items():
                (stick / rel).parent.mkdir(parents=True, exist_ok=True)
                (stick / rel).write_bytes(data)
            fill(outbox)
            proc = case.sync()
            err = proc.stderr.decode()
            assert proc.returncode == 1, err
            assert "Traceback" not in err
            last = err.strip().splitlines()[-1]
            assert last.startswith(f"giter-agent: DiskFull: cannot write the outbox {outbox}")
            assert f"spec {case.pub.head('main')[:12]} is applied" in last
            assert {p.name: p.read_bytes() for p in outbox.iterdir()
                    if not p.name.startswith("filler")} == old
        finally:
            subprocess.run(["umount", str(stick)], check=True)
        outcome = case._converge(Outcome("incremental", "stick", "full", 0, 1), "ENOSPC")
        assert outcome.converged, outcome.line()
        assert (outbox / f"{DEVICE}.bundle").read_bytes() != case.old_bundle
    finally:
        case.close()
