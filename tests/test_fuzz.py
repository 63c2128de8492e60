"""A short, seeded run of every fuzz target, and every saved finding as a regression.

Each target (tests/fuzz/targets.py) gets its seeds plus a fixed number of seeded
mutations through the portable engine, so the run is the same on every machine and
emulated board; any exception outside the target's contract fails the test with the
input that caused it. The long, coverage-guided campaign is ``python tests/fuzz
campaign`` (docs/reliability.md). One atheris smoke run checks that harness where the
atheris wheel installs and is skipped elsewhere.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fuzz.engine import HERE, atheris_available, check_one, mutate_run
from fuzz.targets import TARGETS

# Inputs per target: enough to pass every seed and mutate each a few times; slow targets
# (a quarantine or a config file per input) get fewer. All together: a few seconds.
RUNS = {"import_gate": 150, "import_gate_objects": 150, "config": 200}
REGRESSIONS = Path(__file__).parent / "fuzz" / "regressions"


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_short_seeded_fuzz_run(name):
    target = TARGETS[name]
    seeds = target.seeds()
    assert seeds, f"{name} has no seeds"
    result = mutate_run(name, target.run, target.allowed, seeds, runs=RUNS.get(name, 1500),
                        seed=1)
    assert result.executions == RUNS.get(name, 1500)
    assert not result.findings, "\n".join(
        f"{f.summary}\n  input: {f.data[:300]!r}" for f in result.findings.values())


def _regressions() -> list[Path]:
    return sorted(REGRESSIONS.glob("*.bin"))


@pytest.mark.parametrize("path", _regressions(), ids=lambda p: p.stem)
def test_every_finding_stays_fixed(path):
    """Inputs the campaigns found (named ``<target>-<what>.bin``); each is refused now."""
    name = path.stem.split("-", 1)[0]
    target = TARGETS[name]
    assert check_one(target.run, target.allowed, path.read_bytes()) is None


@pytest.mark.skipif(not atheris_available(), reason="atheris has no wheel for this platform")
def test_atheris_harness_runs_a_target(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(HERE), "run", "serial_messages", "--engine", "atheris",
         "--minutes", "0.02", "--findings", str(tmp_path)],
        capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "serial_messages: " in proc.stdout and " 0 finding(s)" in proc.stdout
