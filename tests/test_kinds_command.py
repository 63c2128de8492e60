"""The Command kind with real subprocesses: allowlist, once per generation, timeout, tail."""

from __future__ import annotations

import os
import time

from gpiozero.pins.mock import MockFactory
from support.kinds import doc, make_ctx, ready, specset

from giter_agent.kinds import builtin_kinds
from giter_agent.reconcile.engine import reconcile

SH = "/bin/sh"


def make(tmp_path, clock, **commands):
    return make_ctx(tmp_path, MockFactory(), clock,
                    commands={name: tuple(argv) for name, argv in commands.items()})


def cmd(name: str, command: str, generation: int | None = 1, **spec) -> bytes:
    return doc("Command", name, {"command": command, **spec}, generation=generation)


def test_runs_once_per_generation(tmp_path, clock, monkeypatch):
    counter = tmp_path / "runs"
    ctx = make(tmp_path, clock,
               restart=[SH, "-c", f'echo run >> {counter}; echo "restarted app"; echo env=$FOO'])
    monkeypatch.setenv("FOO", "agent-secret")  # the agent's own environment must not leak
    kinds = builtin_kinds()
    first = reconcile(specset(cmd("r", "restart")), ctx, kinds, {}, "c1")
    rec = first.records["Command/r"]
    assert ready(rec) == (True, "Succeeded")
    observed = rec.status["observed"]
    assert observed["exitCode"] == 0 and observed["ranFor"] == "generation 1"
    assert observed["outputTail"] == "restarted app\nenv="
    assert observed["durationSeconds"] >= 0
    assert counter.read_text() == "run\n"
    # Later passes of the same generation repeat the result without running it again.
    clock.advance(600)
    second = reconcile(specset(cmd("r", "restart")), ctx, kinds, first.records, "c1")
    assert second.records["Command/r"].status == rec.status
    assert counter.read_text() == "run\n"
    # A new generation runs it again.
    third = reconcile(specset(cmd("r", "restart", generation=2)), ctx, kinds, second.records,
                      "c2")
    assert third.records["Command/r"].status["observed"]["ranFor"] == "generation 2"
    assert third.records["Command/r"].status["observedGeneration"] == 2
    assert counter.read_text() == "run\nrun\n"


def test_without_generation_runs_once_per_spec(tmp_path, clock):
    counter = tmp_path / "runs"
    ctx = make(tmp_path, clock, tick=[SH, "-c", f"echo x >> {counter}"])
    kinds = builtin_kinds()
    r1 = reconcile(specset(cmd("t", "tick", generation=None)), ctx, kinds, {}, "c1")
    r2 = reconcile(specset(cmd("t", "tick", generation=None)), ctx, kinds, r1.records, "c1")
    assert counter.read_text() == "x\n"
    reconcile(specset(cmd("t", "tick", generation=None, timeout=5)), ctx, kinds, r2.records,
              "c2")
    assert counter.read_text() == "x\nx\n"


def test_not_allowlisted(tmp_path, clock):
    ctx = make(tmp_path, clock, restart=["/bin/true"])
    result = reconcile(specset(cmd("x", "reboot")), ctx, builtin_kinds(), {}, "c1")
    rec = result.records["Command/x"]
    assert ready(rec) == (False, "CommandNotAllowed")
    assert "allowed: restart" in rec.status["conditions"][0]["message"]


def test_failure_is_permanent_for_the_generation(tmp_path, clock):
    counter = tmp_path / "runs"
    ctx = make(tmp_path, clock, bad=[SH, "-c", f"echo x >> {counter}; echo oops >&2; exit 3"])
    kinds = builtin_kinds()
    first = reconcile(specset(cmd("b", "bad")), ctx, kinds, {}, "c1")
    rec = first.records["Command/b"]
    assert ready(rec) == (False, "CommandFailed")
    assert rec.status["observed"]["exitCode"] == 3
    assert rec.status["observed"]["outputTail"] == "oops"
    assert "observedGeneration" not in rec.status
    reconcile(specset(cmd("b", "bad")), ctx, kinds, first.records, "c1")
    assert counter.read_text() == "x\n"


def test_timeout_kills_the_whole_process_group(tmp_path, clock):
    pidfile = tmp_path / "child.pid"
    ctx = make(tmp_path, clock,
               hang=[SH, "-c", f"sleep 60 & echo $! > {pidfile}; echo started; wait"])
    result = reconcile(specset(cmd("h", "hang", timeout=1)), ctx, builtin_kinds(), {}, "c1")
    rec = result.records["Command/h"]
    assert ready(rec) == (False, "CommandTimedOut")
    assert rec.status["observed"]["exitCode"] is None
    assert rec.status["observed"]["outputTail"] == "started"
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 120  # a hang guard, not a bound
    while True:  # the backgrounded sleep died with its shell
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{child}/stat") as fh:
            if fh.read().split()[2] == "Z":
                break  # a zombie awaiting its reaper is dead too
        assert time.monotonic() < deadline, "the child outlived the timeout"
        time.sleep(0.05)


def test_output_tail_is_bounded(tmp_path, clock):
    ctx = make(tmp_path, clock, chatty=[SH, "-c", "i=0; while [ $i -lt 5000 ]; do "
                                        "echo line $i; i=$((i+1)); done"])
    result = reconcile(specset(cmd("c", "chatty")), ctx, builtin_kinds(), {}, "c1")
    tail = result.records["Command/c"].status["observed"]["outputTail"]
    lines = tail.splitlines()
    assert len(lines) == 20 and lines[-1] == "line 4999"


def test_missing_program(tmp_path, clock):
    ctx = make(tmp_path, clock, ghost=["/nonexistent/bin/ghost"])
    result = reconcile(specset(cmd("g", "ghost")), ctx, builtin_kinds(), {}, "c1")
    assert ready(result.records["Command/g"]) == (False, "CommandNotRunnable")


def test_plan(tmp_path, clock):
    ctx = make(tmp_path, clock, restart=["/bin/true"])
    kind = builtin_kinds()["Command"]
    spec = kind.validate({"command": "restart"})
    ctx.generations = {"Command/r": 4}
    assert kind.plan("Command/r", spec, ctx) == "would run restart (/bin/true) once for " \
        "generation 4"
    result = reconcile(specset(cmd("r", "restart", generation=4)), ctx, builtin_kinds(), {},
                       "c1")
    ctx.records = result.records
    assert kind.plan("Command/r", spec, ctx) is None
