"""Power cuts: the device's disk keeps only what was fsynced, and the next sync converges.

The state directory, files root and stick live on a loop-mounted ext4 (and btrfs)
image (tests/support/powercut.py). A sync is stopped just before its N-th fsync (so the disk
holds exactly what the first N-1 made durable) or runs to the end, the power is cut
(the image copied without what was not synced, and mounted again), and the next sync
must converge as after any crash (tests/support/deathtest.py). A sync that exited 0 must have
made everything it reported durable: after the cut, before any other sync, the state
names the new spec and the files are as that spec says.
"""

from __future__ import annotations

import random

import pytest
from support.deathtest import Case, have_strace
from support.powercut import Disk, cut_at, unavailable

SCENARIOS = ("first", "incremental", "prune")
KILL_POINTS = 2  # seeded fsync points per scenario and filesystem, plus the completed run


@pytest.fixture(params=["ext4", "btrfs"])
def disk(request, tmp_path):
    why = unavailable(request.param) or (None if have_strace() else "strace is not installed")
    if why:
        pytest.skip(f"power-cut model on {request.param}: {why}")
    d = Disk(tmp_path, tmp_path / "mnt", request.param).make()
    yield d
    d.close()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_power_cut_at_any_fsync_loses_nothing_that_was_reported(disk, tmp_path, scenario):
    case = Case(tmp_path / "case", scenario, live=disk.mountpoint).setup()
    try:
        counts = case.counts()
        fsyncs = sorted(random.Random(7).sample(range(1, counts["fsync"] + 1), KILL_POINTS))
        failed = [f"{disk.fs}: {o.line()}" for o in (cut_at(case, disk, n)
                                                     for n in [*fsyncs, None])
                  if not o.converged]
        assert not failed, "\n".join(failed)
    finally:
        case.close()


def test_the_model_drops_what_was_not_fsynced(disk):
    from giter_agent.core.durable import atomic_write

    atomic_write(disk.mountpoint / "durable", b"kept\n")
    (disk.mountpoint / "cached").write_bytes(b"lost\n")
    disk.cut()
    assert (disk.mountpoint / "durable").read_bytes() == b"kept\n"
    assert not (disk.mountpoint / "cached").exists()
