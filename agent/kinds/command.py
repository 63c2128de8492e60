"""``Command``: run one allowlisted command once per generation, with a timeout.

Called by the reconciler through the ``Kind`` interface. The spec only *names* a
command; the argv comes from the local config's ``[commands] allowed`` table, so a
publisher can never run anything the device's owner did not list. The command runs
once for each ``metadata.generation`` (without one: once for each distinct spec),
remembered in the resource's record, so every later pass repeats the result instead
of running it again. At most once: the run is journaled as started, durably, before
the command starts (``state.command_journal``), so an agent that dies while it runs
(power cut, watchdog, OOM kill) reports it ``CommandInterrupted`` after the restart
and never starts it a second time; a new ``metadata.generation`` runs it again. While
it runs, the pass tells the daemon it may take up to the command's timeout
(``Context.allow_busy``), so systemd's watchdog keeps being fed.

The command gets no stdin, ``/`` as its folder, a fixed minimal environment (nothing
of the agent's own), and its own process group, killed whole on timeout. Output goes
to a temp file and only its tail is kept: a chatty command cannot fill a 512 MB board.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from typing import Any

from giter_agent.config.agent_toml import NAME_RE
from giter_agent.core.errors import CommandTimedOut
from giter_agent.core.named_tuple import NamedTuple
from giter_agent.kinds.base import (
    Context,
    Done,
    Failed,
    Kind,
    Outcome,
    Retry,
    fingerprint,
    rfc3339,
)
from giter_agent.kinds.fields import Field, by_name, check_declared, value

TAIL_BYTES = 2048
TAIL_LINES = 20
_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8", "HOME": "/"}
# After SIGTERM, how long a timed-out command gets before SIGKILL.
_GRACE_S = 5.0


class RunResult(NamedTuple):
    exit_code: int | None  # None: killed after the timeout
    duration: float
    tail: str


def _tail(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-TAIL_LINES:])


def run_bounded(argv: tuple[str, ...], timeout: float) -> RunResult:
    """Run ``argv``; kill its process group after ``timeout`` s. Keeps the output's tail."""
    with tempfile.TemporaryFile() as out:
        start = time.monotonic()
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, cwd="/", env=dict(_ENV),
                                start_new_session=True, close_fds=True)
        code: int | None
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
            _kill_group(proc)
        duration = time.monotonic() - start
        size = out.seek(0, os.SEEK_END)
        out.seek(max(0, size - TAIL_BYTES))
        return RunResult(code, duration, _tail(out.read()))


def _kill_group(proc: subprocess.Popen) -> None:
    # The whole group: a shell script's children die with it.
    for sig, wait in ((signal.SIGTERM, _GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


class CommandKind(Kind):
    kind = "Command"

    DESCRIPTION = ("Runs a command from the device's own [commands] allowlist, once per "
                   "metadata.generation.")
    FIELDS = (
        Field("command", "string", "a name in the agent's [commands] allowed list",
              required=True, pattern=NAME_RE.pattern,
              message="must name an entry of the agent's [commands] allowed list"),
        Field("timeout", "number", "seconds before the command is killed", default=60,
              minimum=1, maximum=3600),
    )

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        check_declared(spec, self.FIELDS)
        return {"command": spec["command"],
                "timeout": float(value(spec, by_name(self.FIELDS)["timeout"])),
                "prune": spec.get("prune", True)}

    @staticmethod
    def _token(key: str, spec: dict[str, Any], ctx: Context) -> str:
        generation = ctx.generations.get(key)
        if generation is not None:
            return f"generation {generation}"
        return f"spec {fingerprint(spec)}"

    @staticmethod
    def _argv(spec: dict[str, Any], ctx: Context) -> tuple[str, ...] | Failed:
        argv = ctx.commands.get(spec["command"])
        if argv is None:
            allowed = ", ".join(sorted(ctx.commands)) or "none"
            return Failed("CommandNotAllowed",
                          f"{spec['command']!r} is not in this device's [commands] allowed "
                          f"list (allowed: {allowed})")
        return argv

    def apply(self, key: str, spec: dict[str, Any], ctx: Context) -> Outcome:
        argv = self._argv(spec, ctx)
        if isinstance(argv, Failed):
            return argv
        token = self._token(key, spec, ctx)
        memory = ctx.memory(key)
        journal = ctx.command_journal
        name = spec["command"]
        if memory.get("ran") == token:
            if journal is not None and journal.get(key) is not None:
                journal.forget(key)  # the state file holds the result now
            return _outcome(memory["result"], memory)  # once per generation: say it again
        entry = journal.get(key) if journal is not None else None
        if entry is not None and entry.get("token") == token:
            if entry.get("phase") == "finished":
                record = entry["result"]  # it ran; the pass that ran it was cut short
            else:
                record = _interrupted(name, token, entry.get("at"))
            return _outcome(record, {"ran": token, "result": record})
        try:
            if journal is not None:
                journal.started(key, token, ctx.clock())
        except OSError as exc:
            # Not journaled, not run: running it now could mean running it twice.
            return Retry("JournalWriteFailed", f"{name}: cannot record the run before "
                         f"starting it: {exc.strerror or exc}", 60)
        ctx.allow_busy(spec["timeout"] + 2 * _GRACE_S)
        try:
            result = run_bounded(argv, spec["timeout"])
        except OSError as exc:
            record = {"reason": "CommandNotRunnable", "observed": {"command": name},
                      "message": f"{name}: cannot run {argv[0]}: {exc.strerror or exc}"}
            _finish(journal, key, token, record)
            return _outcome(record, {"ran": token, "result": record})
        observed: dict[str, Any] = {"command": name, "ranFor": token,
                                    "durationSeconds": round(result.duration, 2)}
        if result.exit_code is None:
            reason: str = CommandTimedOut.reason
            message = f"{name} did not finish within {spec['timeout']:g} s and was killed"
        elif result.exit_code == 0:
            reason, message = "Succeeded", f"{name} exited 0"
        elif result.exit_code < 0:
            reason, message = "CommandFailed", f"{name} was killed by signal {-result.exit_code}"
        else:
            reason, message = "CommandFailed", f"{name} exited {result.exit_code}"
        observed["exitCode"] = result.exit_code
        observed["outputTail"] = result.tail
        record = {"reason": reason, "message": message, "observed": observed}
        _finish(journal, key, token, record)
        return _outcome(record, {"ran": token, "result": record})

    def plan(self, key: str, spec: dict[str, Any], ctx: Context) -> str | None:
        argv = self._argv(spec, ctx)
        if isinstance(argv, Failed):
            return f"would fail: {argv.reason}: {argv.message}"
        token = self._token(key, spec, ctx)
        if ctx.memory(key).get("ran") == token:
            return None
        journal = ctx.command_journal
        entry = journal.get(key) if journal is not None else None
        if entry is not None and entry.get("token") == token:
            return None  # started already (and maybe cut short): never run twice
        return f"would run {spec['command']} ({' '.join(argv)}) once for {token}"

    def plan_prune(self, key: str, spec: dict[str, Any], ctx: Context) -> str:
        return "nothing to undo (a command that ran stays run)"


def _interrupted(name: str, token: str, at: float | None) -> dict[str, Any]:
    when = f" at {rfc3339(at)}" if isinstance(at, (int, float)) else ""
    return {"reason": "CommandInterrupted", "observed": {"command": name, "ranFor": token,
                                                         "exitCode": None},
            "message": f"{name} was started for {token}{when} and the agent stopped before "
                       "it finished (power cut, restart); it is not run again: bump "
                       "metadata.generation to run it again"}


def _finish(journal: Any, key: str, token: str, record: dict[str, Any]) -> None:
    if journal is None:
        return
    # If this write fails, "started" stays: a restart before the state is saved reports
    # the run interrupted, which is true enough and never runs it twice.
    with contextlib.suppress(OSError):
        journal.finished(key, token, record)


def _outcome(record: dict[str, Any], memory: dict[str, Any]) -> Outcome:
    if record["reason"] == "Succeeded":
        return Done(record["reason"], record["message"], record["observed"], memory=memory)
    return Failed(record["reason"], record["message"], record["observed"], memory=memory)
