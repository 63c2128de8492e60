"""Death tests: a sync stopped at a writing syscall (SIGKILL, ENOSPC, EIO), then synced again.

Each mechanism the crash reports named is hit exactly (the N of the syscall found in
a clean run's trace), then a seeded sample of every scenario's kill points runs; the
exhaustive sweep over every N is ``python bench/death_sweep.py`` (docs/reliability.md).
After every fault the next sync must converge (``deathtest.Case.check``).
"""

from __future__ import annotations

import random

import pytest
from support.deathtest import DEVICE, FAULTS, Case, have_strace, points

pytestmark = pytest.mark.skipif(not have_strace(),
                                reason="strace is not installed (Debian package strace)")

SAMPLE = {"first": 4, "incremental": 2, "prune": 2, "packing": 2, "consolidating": 3,
          "network": 2}
SEED = 12


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    made: dict[str, Case] = {}

    def get(scenario: str) -> Case:
        if scenario not in made:
            made[scenario] = Case(tmp_path_factory.mktemp(f"death-{scenario}"),
                                  scenario).setup()
        return made[scenario]

    yield get
    for case in made.values():
        case.close()


def _left(*names: str):
    """A probe: the faulted run left each of ``names`` (globs under the live folder)."""
    def probe(case: Case) -> None:
        for name in names:
            assert list(case.live.glob(name)), f"the fault left no {name}"
    return probe


STATUS_LOCK = rf"refs/heads/status/{DEVICE}\.lock\""
MAIN_LOCK = r"refs/heads/main\.lock\""
TARGETED = [
    # (scenario, syscall, fault, pattern, after, what the fault must leave behind)
    ("first", "rename", "kill", r"refs/heads/main\.lock\"", None,
     "device/state/repo.git/refs/heads/main.lock"),
    ("first", "rename", "kill", STATUS_LOCK, None,
     f"device/state/repo.git/refs/heads/status/{DEVICE}.lock"),
    # The status commit's objects, one pack: cut as it is renamed in (its index not yet).
    ("first", "rename", "kill", r"objects/pack/tmp_pack_\w+\", \"[^\"]*\.pack\"", None,
     "device/state/repo.git/objects/pack/tmp_pack_*"),
    # The first status commit's ref moved, the state file not yet saved.
    ("first", "rename", "kill", r"state\.msgpack", STATUS_LOCK, None),
    ("first", "rename", "kill", r"\.repo\.git\.init-", None, "device/state/.repo.git.init-*"),
    # File targets and the stick's outbox are written through their open folders (the
    # *at calls, names relative to the folder): kill at the rename that replaces them.
    ("first", "renameat", "kill", r"\"\.motd\.", None, "device/root/.motd.*.giter-tmp"),
    ("incremental", "renameat", "kill", r"\"\.pi-01\.bundle\.", None,
     "stick/giter/outbox/.pi-01.bundle.*"),
    ("packing", "rename", "kill", r"objects/pack/tmp", None,
     "device/state/repo.git/objects/pack/tmp*"),
    # Consolidation, which the status commit's pack does (its objects and the small
    # packs' in one pack), after the spec ref moved and before the status ref does:
    # killed as the merged pack is renamed in (a pack without its index is left), and
    # as the first merged-away pack's index is removed (both the merged pack and some
    # old ones are left: every object is still there, the status commit unnamed).
    ("consolidating", "rename", "kill", r"objects/pack/tmp_pack_\w+\", \"[^\"]*\.pack\"",
     MAIN_LOCK, None),
    ("consolidating", "unlink", "kill", r"objects/pack/pack-\w+\.idx\"", MAIN_LOCK, None),
    # Disk full at the last state save, and on the stick at the status bundle.
    ("incremental", "write", "ENOSPC", r"format", STATUS_LOCK, None),
    ("incremental", "write", "ENOSPC", r"# v2 git bundle", None, None),
    ("incremental", "fsync", "EIO", r".", r"\"\.pi-01\.bundle\.", None),
    # A prune the disk refused is tried again, not forgotten with the file left behind.
    ("prune", "unlinkat", "EIO", r"\"extra\"", None, None),
]


@pytest.mark.parametrize("scenario,syscall,fault,pattern,after,left", TARGETED,
                         ids=[f"{t[0]}-{t[2]}-{t[3]}" for t in TARGETED])
def test_each_crash_mechanism_converges(cases, scenario, syscall, fault, pattern, after, left):
    case = cases(scenario)
    n = case.point_of(syscall, pattern, after)
    outcome = case.fault(syscall, fault, n, probe=_left(left) if left else None)
    assert outcome.converged, outcome.line()


def test_a_full_disk_is_one_typed_line_and_keeps_the_last_good_spec(cases):
    case = cases("incremental")
    n = case.point_of("write", r"format", STATUS_LOCK)
    seen: dict[str, object] = {}

    def probe(c: Case) -> None:
        seen.update(c.status_json())

    outcome = case.fault("write", "ENOSPC", n, probe=probe)
    assert outcome.converged, outcome.line()
    assert outcome.faulted_rc == 1
    assert seen["appliedCommit"] == case.old_applied


@pytest.mark.parametrize("scenario", sorted(SAMPLE))
def test_a_sample_of_kill_points_converges(cases, scenario):
    case = cases(scenario)
    counts = case.counts()
    sample = points(counts, FAULTS, exhaustive=False, sample=SAMPLE[scenario], seed=SEED,
                    console=case.console_writes)
    failed = [o.line() for o in (case.fault(*p) for p in sample) if not o.converged]
    assert not failed, "\n".join(failed)


def test_a_daemon_killed_at_random_moments_comes_back(cases):
    case = cases("network")
    rng = random.Random(SEED)
    failed = [o.line() for o in (case.kill_daemon(rng.uniform(0.3, 3.0)) for _ in range(2))
              if not o.converged]
    assert not failed, "\n".join(failed)
