"""A one-job process collects cycles rarely and skips the exit's collection; the
daemon keeps Python's own collector (giter_agent.core.lifetime)."""

from __future__ import annotations

import gc
import re
import subprocess
import sys
import tomllib
import weakref
from pathlib import Path

import pytest

from giter_agent.cli.main import main
from giter_agent.core import lifetime

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _collector_restored():
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


class _Node:
    def __init__(self) -> None:
        self.other: object = self


def test_a_job_walks_young_objects_rarely_and_freezes_what_is_left_at_exit():
    seen = []
    assert gc.get_freeze_count() == 0
    code = lifetime.one_job(lambda: seen.append(gc.get_threshold()) or 7)
    assert code == 7
    assert seen == [(lifetime.JOB_THRESHOLD, *gc.get_threshold()[1:])]
    assert gc.get_freeze_count() > 0  # the interpreter's last collections skip them


def test_a_job_still_collects_its_cycles():
    def job() -> int:
        gc.collect()
        cycle = _Node()
        gone = weakref.ref(cycle)
        del cycle
        kept = []
        for _ in range(2 * lifetime.JOB_THRESHOLD):
            kept.append([])  # live objects: the young count grows until a walk
            if gone() is None:
                return len(kept)
        return 0

    made = lifetime.one_job(job)
    assert 0 < made <= lifetime.JOB_THRESHOLD + 10


def test_a_job_freezes_even_when_it_fails():
    def job() -> int:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        lifetime.one_job(job)
    assert gc.get_freeze_count() > 0


@pytest.mark.parametrize("command", ["run", "serve-serial"])
def test_the_long_lived_commands_take_pythons_thresholds_back(tmp_path, command):
    default = gc.get_threshold()
    gc.set_threshold(lifetime.JOB_THRESHOLD, *default[1:])
    # No config: the command fails at once, after it has set its collector.
    assert main(["-c", str(tmp_path / "missing.toml"), command]) == 2
    assert gc.get_threshold() == default


def test_a_command_called_in_process_leaves_the_collector_alone(tmp_path, capsys):
    default = gc.get_threshold()
    assert main(["-c", str(tmp_path / "missing.toml"), "status"]) != 0
    assert gc.get_threshold() == default and gc.get_freeze_count() == 0


def test_every_entry_point_runs_main_as_one_job():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"giter-agent": "giter_agent.cli.main:entry",
                       "giter-bundle": "giter_bundle.cli:entry"}
    for launcher in ("giter-agent", "giter-bundle"):
        text = (ROOT / "debian" / "bin" / launcher).read_text()
        assert re.search(r"^from giter_\w+\.cli(\.main)? import entry", text, re.M), launcher
        assert text.rstrip().endswith("sys.exit(entry())"), launcher
    assert (ROOT / "agent" / "__main__.py").read_text().rstrip().endswith("sys.exit(entry())")
    assert "sys.exit(one_job(main))" in (ROOT / "agent/daemon/worker.py").read_text()


def test_the_process_runs_with_the_job_threshold():
    # The module's own entry, in a process of its own, as `python -m giter_agent` runs it.
    probe = ("import gc, sys\n"
             "import giter_agent.cli.main as m\n"
             "m.main = lambda: print(gc.get_threshold()[0]) or 0\n"
             "sys.exit(m.entry())\n")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == str(lifetime.JOB_THRESHOLD)


def _process(module: str, *args: object) -> str:
    """``main`` of ``module`` run as a process of its own under Python's development
    mode, with the collector Python gives it: stderr, which must hold no warning of a
    file left open (one the process's end would leave to the collector)."""
    code = f"import sys; from {module} import main; sys.exit(main())"
    proc = subprocess.run([sys.executable, "-X", "dev", "-W", "always::ResourceWarning",
                           "-c", code, *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "ResourceWarning" not in proc.stderr and "unclosed" not in proc.stderr, proc.stderr
    return proc.stdout


def test_a_sneakernet_round_leaves_no_file_open_at_exit(tmp_path, fleet, stick):
    # What makes freezing at exit safe: every file a job writes is closed before it
    # ends, none is left for a last collection to flush.
    from support.fleet import enrolled, motd

    (pi,) = enrolled(fleet, tmp_path, "pi-a")
    fleet.write("devices/pi-a/motd.yaml", motd(pi, "hello\n"))
    fleet.ok("commit", "-m", "welcome")
    _process("giter_bundle.cli", "-C", fleet.root, "create", stick)
    _process("giter_agent.cli.main", "-c", pi.config, "sync", "--usb", stick)
    assert pi.motd() == "hello\n"
    assert "ACCEPTED" in _process("giter_bundle.cli", "-C", fleet.root, "import", stick)
    assert "pi-a" in _process("giter_bundle.cli", "-C", fleet.root, "status")
    _process("giter_agent.cli.main", "-c", pi.config, "status")
