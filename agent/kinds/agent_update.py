"""``AgentUpdate``: the agent updates itself from wheels in the signed tree, A/B, on trial.

Called by the reconciler through the ``Kind`` interface; one per device. ``wheels``
names a folder under ``artifacts/`` of the signed spec commit holding giter-agent's
wheel for ``version`` (and any pure library wheel it wants newer than the installed
package's), each optionally pinned in ``sha256`` (``sha256sum`` lines). When the agent
runs another version:

1. a version older than the running one is refused (``DowngradeRefused``) unless the
   spec says ``allowDowngrade: true``;
2. the wheels are streamed from the tree, checked against their pins, unpacked into a
   new environment beside the running one and tried (``kinds.agent_envs``); a refusal
   changes nothing;
3. the trial is journaled, durably (``state.update_journal``: version, the environment
   it replaces, the deadline), then ``agent-envs/current`` is flipped to it; the pass
   reports ``Restarting`` and the daemon, seeing another environment selected, exits
   so systemd starts it again (``cli.boot`` runs the selected environment);
4. the new version must complete a sync and write a status commit before ``deadline``
   (``sync.applier`` then confirms the trial), or the boot loader - the installed
   package's code, never the new version's - selects the previous environment again and
   that version reports ``UpdateRolledBack``; the same spec is not tried again.

Once confirmed, the environment before the previous one is removed (A/B: the running
one and the one it replaced stay). Removing the resource leaves the running version
in place. Status reports the running version, the one wanted, and the trial.
"""

from __future__ import annotations

import contextlib
from typing import Any

from giter_agent.core.errors import ArtifactError, ResourceError
from giter_agent.core.log import get_logger
from giter_agent.kinds.base import (
    Context,
    Done,
    Failed,
    Kind,
    Outcome,
    Retry,
    fingerprint,
    is_outcome,
    rfc3339,
    would_fail,
)
from giter_agent.kinds.fields import Field, check_declared
from giter_agent.kinds.release import SOURCE_PATTERN, release_name, tree_refusal
from giter_agent.state.update_journal import CONFIRMED, ROLLED_BACK, TRIAL

log = get_logger("giter.kinds.agent_update")

_PIN = r"[0-9a-f]{64}  [a-z0-9][a-z0-9._-]*\.whl"
_NOT_A_FOLDER = "is not a folder of wheels in the spec commit"
DEFAULT_DEADLINE = "10m"


class AgentUpdateKind(Kind):
    kind = "AgentUpdate"
    PRUNE_DEFAULT = False  # a removed AgentUpdate leaves the running version in place

    DESCRIPTION = ("giter-agent itself, updated from wheels under artifacts/ into a second "
                   "environment beside the running one; kept only if the new version "
                   "writes a status commit before the deadline, else switched back.")
    FIELDS = (
        Field("version", "string", "the giter-agent version to run (PEP 440: 1.2.0, "
              "1.3.0rc1)", required=True, pattern=r"[0-9][0-9A-Za-z.+_-]{0,63}",
              message="must be a version like 1.2.0"),
        Field("wheels", "string", "a folder under artifacts/ holding giter-agent's wheel "
              "for that version and any pure library wheels it needs",
              required=True, pattern=SOURCE_PATTERN,
              message="must be a folder under artifacts/, like artifacts/agent-1.2.0"),
        Field("sha256", "array", "pins: lines of `sha256sum *.whl` (hex, two spaces, the "
              "file name)", max_items=64,
              items=Field("sha256", "string", "<sha256>  <wheel file name>", pattern=_PIN),
              message="must be a list of `sha256sum` lines: <64 hex>  <name>.whl"),
        Field("deadline", "string", "how long the new version has to complete a sync and "
              "write a status commit before it is switched back (30s to 1d)",
              default=DEFAULT_DEADLINE, pattern=r"([0-9]+[smhd])+",
              message="must be a duration like 10m"),
        Field("allowDowngrade", "boolean", "allow a version older than the running one",
              default=False),
    )

    def __init__(self, running: tuple[str, str | None] | None = None) -> None:
        """``running``: this process's version and environment (tests pass them)."""
        if running is None:
            from giter_agent import __version__
            from giter_agent.state.agent_env import running_env

            running = (__version__, running_env())
        self.version, self.env = running

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        from giter_agent.core.times import parse_duration
        from giter_agent.core.versions import key

        check_declared(spec, self.FIELDS)
        key(spec["version"])  # InvalidSpec when it is not a version
        deadline = parse_duration(spec.get("deadline", DEFAULT_DEADLINE))
        if not 30 <= deadline <= 86400:
            raise ResourceError("spec.deadline must be between 30s and 1d",
                                reason="InvalidSpec")
        pins: dict[str, str] = {}
        for line in spec.get("sha256", []):
            digest, _sep, name = line.partition("  ")
            if pins.setdefault(name, digest) != digest:
                raise ResourceError(f"spec.sha256 pins {name} twice", reason="InvalidSpec")
        return {"version": spec["version"], "wheels": spec["wheels"].rstrip("/"),
                "sha256": pins, "deadline": deadline,
                "allowDowngrade": bool(spec.get("allowDowngrade", False)),
                "prune": spec.get("prune", False)}

    # -- helpers -------------------------------------------------------------------------

    def _observed(self, spec: dict[str, Any], entry: dict[str, Any] | None) -> dict[str, Any]:
        observed: dict[str, Any] = {"running": self.version, "wanted": spec["version"],
                                    "environment": self.env or "installed package"}
        if entry is not None:
            trial = {k: entry[k] for k in ("phase", "version", "previousVersion", "starts",
                                           "reason") if entry.get(k) is not None}
            if entry.get("deadline"):
                trial["deadline"] = rfc3339(float(entry["deadline"]))
            observed["trial"] = trial
        return observed

    def _wheels(self, spec: dict[str, Any], ctx: Context) -> Any:
        """The wheels to install, or the ``Failed``/``Retry`` that stops the update
        (the rules: ``kinds.wheels.select``, shared with ``giter-bundle lint``)."""
        from giter_agent.kinds.wheels import select

        if ctx.artifacts is None:
            return Retry("SpecTreeUnavailable", "the spec tree is not available to this "
                         "pass", 60)
        try:
            listing = ctx.artifacts.listing(spec["wheels"])
        except ArtifactError as exc:
            return tree_refusal(exc, spec["wheels"], _NOT_A_FOLDER, "; the update is refused")
        chosen = select(spec["wheels"], (info.path for info in listing.files),
                        spec["version"], spec["sha256"])
        if chosen.refusals:
            return Failed(chosen.refusals[0].reason, chosen.refusals[0].message)
        return listing.tree_id, list(chosen.wheels)

    # -- the Kind interface --------------------------------------------------------------

    def apply(self, key: str, spec: dict[str, Any], ctx: Context) -> Outcome:
        from giter_agent.core.versions import compare

        journal, envs = ctx.update_journal, ctx.agent_envs
        if journal is None or envs is None:
            return Failed("NoStateDirectory", "this pass has no state directory to keep "
                          "agent environments in")
        token = f"{spec['version']} {fingerprint(spec)} g{ctx.generations.get(key)}"
        with contextlib.suppress(OSError):
            envs.sweep()  # what a cut-short switch left; passes hold the state lock
        entry = journal.entry()
        observed = self._observed(spec, entry)
        if entry is not None and entry.get("token") == token \
                and entry.get("phase") == ROLLED_BACK:
            return Failed("UpdateRolledBack", f"{entry.get('message')}: rolled back to "
                          f"giter-agent {self.version}; {spec['version']} is not tried "
                          "again until the spec changes", observed)
        way = compare(spec["version"], self.version)
        if way == 0:
            return self._running(spec, ctx, entry, observed)
        if way < 0 and not spec["allowDowngrade"]:
            return Failed("DowngradeRefused", f"the spec asks for giter-agent "
                          f"{spec['version']}, older than the running {self.version}; "
                          "versions only move forward unless the spec says "
                          "allowDowngrade: true", observed)
        if entry is not None and entry.get("token") == token and entry.get("phase") == TRIAL:
            return Retry("Restarting", f"giter-agent {spec['version']} is selected; the "
                         "agent restarts into it", 60, observed)
        wheels = self._wheels(spec, ctx)
        if is_outcome(wheels):
            return wheels
        tree_id, files = wheels
        name = release_name({"version": spec["version"]}, tree_id)
        try:
            if not envs.exists(name):
                size = envs.build(name, files, ctx.artifacts, spec["version"])
                log.info("laid down giter-agent %s in %s (%d bytes unpacked)",
                         spec["version"], envs.lib(name).parent, size)
        except ArtifactError as exc:
            return tree_refusal(exc, spec["wheels"], _NOT_A_FOLDER, "")
        except OSError as exc:
            return Retry("WriteFailed", f"{envs.folder}: {exc.strerror or exc}", 60,
                         observed)
        now = ctx.clock()
        trial = {"phase": TRIAL, "token": token, "env": name, "version": spec["version"],
                 "previous": self.env, "previousVersion": self.version,
                 "deadline": now + spec["deadline"], "starts": 0, "at": now}
        journal.put(trial)  # before the switch: an OSError here retries, nothing moved
        try:
            envs.select(name, now)
        except OSError:
            with contextlib.suppress(OSError):
                journal.put(entry) if entry is not None else journal.forget("agent")
            raise
        log.warning("giter-agent %s selected (was %s); restarting into it",
                    spec["version"], self.version, extra={"event": "agent-update"})
        return Retry("Restarting", f"giter-agent {spec['version']} installed beside "
                     f"{self.version} and selected; the agent restarts into it, which must "
                     f"write a status commit by {rfc3339(trial['deadline'])}", 60,
                     self._observed(spec, trial))

    def _running(self, spec: dict[str, Any], ctx: Context, entry: dict[str, Any] | None,
                 observed: dict[str, Any]) -> Outcome:
        envs = ctx.agent_envs
        if entry is not None and entry.get("phase") == TRIAL and entry.get("env") == self.env:
            return Done("Updated", f"giter-agent {self.version} runs, on trial: this pass's "
                        "status commit confirms it", observed)
        if entry is not None and entry.get("phase") == CONFIRMED and entry.get("env") == self.env:
            with contextlib.suppress(OSError):
                gone = envs.prune((self.env, entry.get("previous")))
                if gone:
                    log.info("removed agent environments %s", ", ".join(gone))
        return Done("Updated", f"giter-agent {self.version} runs", observed)

    def plan(self, key: str, spec: dict[str, Any], ctx: Context) -> str | None:
        from giter_agent.core.versions import compare

        way = compare(spec["version"], self.version)
        if way == 0:
            return None
        if way < 0 and not spec["allowDowngrade"]:
            return would_fail(Failed("DowngradeRefused", f"{spec['version']} is older than "
                                     f"the running {self.version}"))
        wheels = self._wheels(spec, ctx)
        if is_outcome(wheels):
            return would_fail(wheels) if isinstance(wheels, Failed) else None
        return (f"would install giter-agent {spec['version']} from {spec['wheels']} beside "
                f"{self.version}, switch and restart into it (kept if it writes a status "
                f"commit within {spec['deadline']} s)")

    def plan_prune(self, key: str, spec: dict[str, Any], ctx: Context) -> str:
        return f"would leave giter-agent {self.version} running"

    def prune(self, key: str, spec: dict[str, Any], ctx: Context) -> None:
        """Nothing: the running version stays (removing the resource is no downgrade)."""
