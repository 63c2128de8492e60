"""Death tests of a Release switch: ``giter-agent sync`` killed at a writing syscall of it.

The device runs release v1 (``artifacts/app`` of a signed commit, real git); the stick
brings v2. The sync is killed (strace ``inject``, as tests/support/deathtest.py does) at
the syscalls that matter - the rename that names the finished release folder, the
journal written before the link moves, the rename that flips ``current``, the journal
written after the check - and at a seeded sample of all the others. Right after the
kill, ``current`` must name v1 or v2, and the folder it names must be whole; the next
sync must converge (exit 0, ``current`` at v2, no temp file or half-built folder left,
the usual state checks of ``Case.check``).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from support.deathtest import API, DEVICE, Case, have_strace, points
from support.git import Publisher, ssh_keygen

pytestmark = pytest.mark.skipif(not have_strace(),
                                reason="strace is not installed (Debian package strace)")

V1 = {"run.sh": "#!/bin/sh\necho v1\n", "lib/data.txt": "one\n"}
V2 = {"run.sh": "#!/bin/sh\necho v2\n", "lib/data.txt": "two\n", "lib/new.txt": "new\n"}
SAMPLE, SEED = 4, 17


class ReleaseCase(Case):
    """The incremental scenario of ``Case``, with a Release in place of the Files."""

    def __init__(self, base: Path) -> None:
        super().__init__(base, "incremental")
        self.app = self.root / "app"
        self.checks = base / "checks.log"  # one line per health check run

    def checks_run(self) -> int:
        return len(self.checks.read_text().splitlines()) if self.checks.exists() else 0

    def _setup(self) -> None:
        self.root.mkdir(parents=True)
        self.live.mkdir(exist_ok=True)
        (self.stick / "giter/inbox").mkdir(parents=True)
        key = ssh_keygen(self.base / "publisher_ed25519")
        self.pub = Publisher(self.base / "fleet", key)
        self.config.write_text(
            f'device_id = "{DEVICE}"\nstate_dir = "state"\nboard = "generic-mock"\n'
            f'allowed_signers = "{self.pub.allowed_signers}"\n[files]\n'
            f'roots = ["{self.root}"]\n[commands]\nallowed = {{ healthy = ["/bin/sh", "-c", '
            f'"echo checked >> {self.checks}"] }}\n')
        self.release("v1", V1)
        self.sync_ok()
        self.release("v2", V2, incremental=True)
        self.expected = {}  # no File in the root: the release is checked below

    def release(self, version: str, files: dict[str, str], incremental: bool = False) -> None:
        for old in (self.pub.root / "artifacts/app").rglob("*"):
            if old.is_file():
                old.unlink()
        spec = (f"{API}kind: Release\nmetadata:\n  name: app\nspec:\n"
                f"  source: artifacts/app\n  root: {self.app}\n  version: {version}\n"
                "  check: {command: healthy, tries: 1}\n  keep: 1\n")
        self.pub.commit(version, files={f"devices/{DEVICE}/app.yaml": spec,
                                        **{f"artifacts/app/{p}": t for p, t in files.items()}})
        for old in (self.stick / "giter/inbox").glob("*.bundle"):
            old.unlink()
        self.pub.bundle(self.stick / f"giter/inbox/{version}.bundle",
                        *(("main~1..main",) if incremental else ("main",)))

    def running(self) -> dict[str, str] | None:
        """What ``current`` names, read whole, or None when there is no link."""
        link = self.app / "current"
        if not link.is_symlink():
            return None
        folder = self.app / os.readlink(link)
        return {str(p.relative_to(folder)): p.read_text() for p in folder.rglob("*")
                if p.is_file()}

    def check(self, after_fault: bool = False) -> list[str]:
        problems = super().check(after_fault)
        if self.running() != V2:
            problems.append(f"current runs {self.running()}, not v2")
        releases = sorted(p.name for p in (self.app / "releases").iterdir())
        if len(releases) != 2 or not releases[1].startswith("v2-"):
            problems.append(f"releases/ holds {releases}, want v1 and v2")
        return problems


def old_or_new(case: Case) -> None:
    assert isinstance(case, ReleaseCase)
    assert case.running() in (V1, V2), f"after the kill current runs {case.running()}"


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    made = ReleaseCase(tmp_path_factory.mktemp("death-release")).setup()
    assert made.running() == V1
    yield made
    made.close()


FLIP = r'"\.current\.[0-9a-f]+\.giter-tmp"'
TARGETED = [
    # the finished release folder renamed into place
    ("renameat", r'"\.v2-[0-9a-f]{12}\.[0-9a-f]+\.giter-tmp"', None),
    # the journal written before the link moves
    ("rename", r"releases\.journal\"", None),
    # the flip of current, and the root's fsync right after it (the link has moved,
    # the units are not restarted, the check has not run)
    ("renameat", FLIP, None),
    ("fsync", r".", FLIP),
]


@pytest.mark.parametrize(("syscall", "pattern", "after"), TARGETED,
                         ids=["release-folder", "journal", "current-flip", "after-flip"])
def test_a_kill_at_each_step_of_the_switch_leaves_old_or_new_and_converges(
        case, syscall, pattern, after):
    n = case.point_of(syscall, pattern, after)
    seen: list[int] = []

    def probe(c: Case) -> None:
        old_or_new(c)
        seen.append(case.checks_run())

    out = case.fault(syscall, "kill", n, probe=probe)
    assert out.converged, out.line()
    # Cut before its check, v2 is checked by the next sync before it counts as running.
    assert case.checks_run() == seen[0] + 1


def test_a_kill_after_the_check_keeps_the_new_release(case):
    # The second journal write: the check passed, the pass is cut before the state.
    first = case.point_of("rename", r"releases\.journal\"")
    n = case.point_of("rename", r"releases\.journal\"", after=r"\.current\.")
    assert n > first
    out = case.fault("rename", "kill", n, probe=lambda c: None)
    assert out.converged, out.line()
    assert case.running() == V2


def test_a_seeded_sample_of_kill_points_converges(case):
    chosen = points(case.counts(), ("kill",), exhaustive=False, sample=SAMPLE, seed=SEED)
    random.Random(SEED).shuffle(chosen)
    failed = [o.line() for o in (case.fault(s, f, n, probe=old_or_new) for s, f, n in chosen)
              if not o.converged]
    assert not failed, failed
