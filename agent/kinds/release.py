"""``Release``: a folder of the fleet repository switched in atomically, checked, rolled back.

Called by the reconciler through the ``Kind`` interface. ``source`` names a folder
under ``artifacts/`` of the signed spec commit's tree, read through ``Context.artifacts``
(``history.artifacts.TreeArtifacts``: each file streamed, under ``[limits]
max_artifact_mib``, ``ArtifactTooLarge`` / ``ArtifactCorrupt`` otherwise); it is laid down
whole as ``<root>/releases/<name>/`` (``<name>``: ``<version>-<tree id>``,
or the tree id's first 12 digits), ``<root>/current`` is flipped to it (a temp symlink
renamed over the old one, the root fsynced: ``kinds.release_switch``), the units in
``restart`` are restarted (``[services] allowed`` only), and the health check runs
(``kinds.health_check``). A check that fails flips ``current`` back to the release it
replaced, restarts the units again, removes the failed release, and reports
``RolledBack`` with the check's output: the spec stays accepted, the device says it
runs the previous release, and the same release is not tried again until the spec
(or its generation) changes. ``keep`` previous releases are kept; older ones go.

A power cut at any instant of a switch leaves the old release or the new one in
place: the switch is journaled (``state.release_journal``) before the link moves, and
the next pass puts the release it replaced back first, then finishes a rollback or
tries the switch again, at most ``MAX_ATTEMPTS`` times for one spec. A tree holding a
symlink, a submodule or an odd name is refused by the tree allowlist before anything
is written; files are written as regular files only (``O_EXCL``, ``O_NOFOLLOW``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from giter_agent.config.agent_toml import NAME_RE
from giter_agent.core.durable import UnsafePath
from giter_agent.core.errors import ArtifactError, Reason, ResourceError
from giter_agent.core.log import get_logger
from giter_agent.kinds import health_check, systemctl
from giter_agent.kinds.base import (
    Context,
    Done,
    Failed,
    Kind,
    Outcome,
    Retry,
    fingerprint,
    is_outcome,
    would_fail,
)
from giter_agent.kinds.fields import Field, by_name, check_declared, value
from giter_agent.kinds.file import Place, place_under_roots
from giter_agent.kinds.release_switch import ReleaseRoot, link_text, release_of
from giter_agent.kinds.service import UNIT_RE, unit_refusal

log = get_logger("giter.kinds.release")

SWITCHING, ROLLING_BACK, FINISHED = "switching", "rolling-back", "finished"
# A switch cut short this many times for one spec (power cuts, a release that reboots
# the board) is rolled back and not tried again until the spec changes.
MAX_ATTEMPTS = 2
SOURCE_PATTERN = r"artifacts(/[a-z0-9][a-z0-9._-]*)+"
_NOT_A_FOLDER = "is not a folder of files in the spec commit"
_UNIT = r"(?!-)" + UNIT_RE.pattern
_CHECK_FIELDS = (
    Field("command", "string", "a name in the agent's [commands] allowed list; healthy "
          "when it exits 0", pattern=NAME_RE.pattern,
          message="must name an entry of the agent's [commands] allowed list"),
    Field("http", "string", "http://127.0.0.1:PORT/path or http://[::1]:PORT/path; "
          "healthy on a 2xx answer",
          pattern=r"http://(127\.0\.0\.1|\[::1\]):[0-9]{1,5}(/[^\s#]*)?",
          message="must be http://127.0.0.1:PORT/path or http://[::1]:PORT/path"),
    Field("unit", "string", "a unit of the agent's [services] allowed list; healthy when "
          "active", pattern=_UNIT, message="must be a systemd unit name like app.service"),
    Field("timeout", "number", "seconds per try", default=10, minimum=1, maximum=600),
    Field("tries", "integer", "tries before the release is rolled back", default=3,
          minimum=1, maximum=20),
    Field("interval", "number", "seconds between tries", default=2, minimum=0, maximum=300),
)


# What a Release or Package reports for a refusal of the tree (``ArtifactError``): its
# own long-standing reasons where it had them, the artifact reasons (too large, corrupt)
# otherwise.
_REASONS: dict[str, str] = {Reason.ArtifactMissing: "SourceNotFound",
                            Reason.ArtifactNotAFile: Reason.UnsafeTreeEntry}


def tree_refusal(exc: ArtifactError, path: str, missing: str, refused: str = "") -> Failed:
    """The ``Failed`` for ``exc`` reading ``path`` of the spec tree: ``missing`` says
    what an absent one is; ``refused`` is added to any other refusal."""
    # A plain string: status documents are YAML, which has no representation of an enum.
    reason = str(_REASONS.get(exc.reason, exc.reason))
    if reason == "SourceNotFound":
        return Failed(reason, f"{path} {missing}")
    return Failed(reason, f"{path}: {exc}{refused}")


def release_name(spec: dict[str, Any], tree_id: str) -> str:
    """The release folder's name: the version (when given) and the tree id."""
    return f"{spec['version']}-{tree_id[:12]}" if spec["version"] else tree_id[:12]


class ReleaseKind(Kind):
    kind = "Release"

    DESCRIPTION = ("A folder under artifacts/ of the fleet repository laid down as a new "
                   "release, switched in by a symlink flip, health-checked, and rolled "
                   "back when the check fails.")
    FIELDS = (
        Field("source", "string", "a folder of the fleet repository under artifacts/",
              required=True, pattern=SOURCE_PATTERN,
              message="must be a folder under artifacts/, like artifacts/app"),
        Field("root", "string", "absolute folder inside a [files] roots folder; holds "
              "releases/ and the current link", required=True, pattern=r"/.*",
              message="must be an absolute path"),
        Field("version", "string", "a label: the release folder is <version>-<tree id>",
              pattern=r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}",
              message="must be letters, digits and . _ + ~ - (at most 64)"),
        Field("restart", "array", "units restarted after each switch (from [services] "
              "allowed)", max_items=16,
              items=Field("restart", "string", "a systemd unit name", pattern=_UNIT),
              message="must be a list of systemd unit names"),
        Field("check", "object", "the health check after a switch: one of command, http, "
              "unit; with timeout, tries, interval", properties=_CHECK_FIELDS),
        Field("keep", "integer", "previous releases kept beside the current one",
              default=2, minimum=0, maximum=20),
    )

    def __init__(self, sleep: Any = None) -> None:
        import time

        self.sleep = sleep or time.sleep  # between health check tries; a fake in tests

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        check_declared(spec, self.FIELDS)
        root = spec["root"]
        if "\0" in root or any(part in ("..", ".") for part in root.split("/")):
            raise ResourceError("spec.root must not contain '.', '..' or NUL",
                                reason="InvalidSpec")
        check = spec.get("check")
        if check is not None:
            kinds = [k for k in ("command", "http", "unit") if k in check]
            if len(kinds) != 1:
                raise ResourceError("spec.check needs exactly one of command, http or unit",
                                    reason="InvalidSpec")
            if "http" in check and health_check.http_target(check["http"]) is None:
                raise ResourceError("spec.check.http must be http://127.0.0.1:PORT/path or "
                                    "http://[::1]:PORT/path", reason="InvalidSpec")
            fields = by_name(_CHECK_FIELDS)
            check = {kinds[0]: check[kinds[0]],
                     **{n: value(check, fields[n]) for n in ("timeout", "tries", "interval")}}
        return {"source": spec["source"], "root": root, "version": spec.get("version"),
                "restart": list(dict.fromkeys(spec.get("restart", []))), "check": check,
                "keep": value(spec, by_name(self.FIELDS)["keep"]),
                "prune": spec.get("prune", True)}

    # -- what the device allows, and what the tree holds ---------------------------------

    @staticmethod
    def _refusal(spec: dict[str, Any], ctx: Context) -> Failed | None:
        for unit in spec["restart"]:
            refused = unit_refusal(unit, ctx.services)
            if refused is not None:
                return refused
        if spec["check"] is not None:
            return health_check.refusal(spec["check"], ctx)
        return None

    @staticmethod
    def _listing(spec: dict[str, Any], ctx: Context) -> Any:
        if ctx.artifacts is None:
            return Retry("SpecTreeUnavailable", "the spec tree is not available to this "
                         "pass", 60)
        try:
            return ctx.artifacts.listing(spec["source"])
        except ArtifactError as exc:
            return tree_refusal(exc, spec["source"], _NOT_A_FOLDER, "; the release is refused")

    def _prepare(self, key: str, spec: dict[str, Any], ctx: Context
                 ) -> tuple[Place, Any, str, str] | Outcome:
        place = place_under_roots(Path(spec["root"]), ctx)
        if isinstance(place, Failed):
            return place
        refused = self._refusal(spec, ctx)
        if refused is not None:
            return refused
        listing = self._listing(spec, ctx)
        if not hasattr(listing, "files"):
            return listing
        name = release_name(spec, listing.tree_id)
        token = f"{name} {fingerprint(spec)} g{ctx.generations.get(key)}"
        return place, listing, name, token

    # -- the Kind interface --------------------------------------------------------------

    def apply(self, key: str, spec: dict[str, Any], ctx: Context) -> Outcome:
        prepared = self._prepare(key, spec, ctx)
        if is_outcome(prepared):
            return prepared
        place, listing, name, token = prepared
        try:
            with ReleaseRoot.open(str(place.root), (*place.folders, place.name),
                                  create=True) as root:
                return self._apply_at(root, key, spec, ctx, listing, name, token, place)
        except ArtifactError as exc:  # a file of the release, while it was laid down
            return tree_refusal(exc, spec["source"], _NOT_A_FOLDER, "; the release is refused")
        except UnsafePath as exc:
            return Failed("PathNotAllowed", f"{place.target}: {exc.strerror}; links are "
                          "never followed")
        except OSError as exc:
            return Retry("WriteFailed", f"{place.target}: {exc.strerror or exc}", 30)

    def _apply_at(self, root: ReleaseRoot, key: str, spec: dict[str, Any], ctx: Context,
                  listing: Any, name: str, token: str, place: Place) -> Outcome:
        journal = ctx.release_journal
        entry = journal.get(key) if journal is not None else None
        memory = ctx.memory(key)
        root.sweep()
        attempts = 0
        if entry is not None and entry.get("phase") in (SWITCHING, ROLLING_BACK):
            # A pass was cut short mid-switch: the release it replaced goes back first.
            record = self._undo(root, spec, ctx, entry, place)
            if record is None and entry.get("token") == token:
                attempts = int(entry.get("attempts", 1))
                if attempts >= MAX_ATTEMPTS:
                    record = self._record(place, spec, listing, name, entry.get("from"),
                                          f"the switch to {name} was cut short {attempts} "
                                          "times (power cut, restart)")
            if record is not None:
                self._journal(journal, key, {"phase": FINISHED, "token": entry.get("token"),
                                             "result": record})
                if entry.get("token") == token:
                    return _rolled_back(record, token)
        elif entry is not None and entry.get("phase") == FINISHED:
            result = entry.get("result") or {}
            if entry.get("token") == token and result.get("reason") == "RolledBack" \
                    and memory.get("failed") != token:
                return _rolled_back(result, token)  # the state file does not hold it yet
            with contextlib.suppress(OSError):
                journal.forget(key)
        if memory.get("failed") == token:
            # Rolled back already for this very spec: reported, never retried.
            record = memory["result"]
            running = record.get("running")
            changes: tuple[str, ...] = ()
            if root.current() != running:
                root.flip(running)
                changes = (f"{place.target}/current was moved; put back to "
                           f"{running or 'nothing'}",)
            outcome = _rolled_back(record, token)
            return Failed(outcome.reason, outcome.message + "".join(
                f"; {c}" for c in changes), outcome.observed, memory=outcome.memory)
        return self._switch(root, key, spec, ctx, listing, name, token, place, attempts)

    def _switch(self, root: ReleaseRoot, key: str, spec: dict[str, Any], ctx: Context,
                listing: Any, name: str, token: str, place: Place, attempts: int
                ) -> Outcome:
        journal = ctx.release_journal
        want = link_text(name)
        before = root.current()
        observed = self._observed(place, spec, listing, name)
        if before == want and root.has(name):
            kept = [n for n in root.names() if n != name][:spec["keep"]]
            root.prune(spec["keep"], name)
            return Done("Released", f"{place.target}/current is release {name}",
                        {**observed, "previous": kept}, memory={"release": name})
        if not root.has(name):
            cut = len(spec["source"].rstrip("/")) + 1
            size = root.lay_down(name, tuple((f.path[cut:], f.executable, f.path)
                                             for f in listing.files), ctx.artifacts)
            log.info("laid down release %s in %s (%d files, %d bytes)", name, place.target,
                     len(listing.files), size)
        self._journal(journal, key, {"phase": SWITCHING, "token": token, "from": before,
                                     "to": want, "attempts": attempts + 1, "at": ctx.clock()},
                      required=True)
        ctx.allow_busy(health_check.budget(spec["check"]) + 90 * len(spec["restart"]))
        try:
            root.flip(want)
            root.touch(name, ctx.clock())
            healthy, tries, output = self._restart_and_check(spec, ctx)
        except OSError:
            with contextlib.suppress(OSError):
                root.flip(before)  # best effort; the journal has it otherwise
            raise
        if healthy:
            self._journal(journal, key, {"phase": FINISHED, "token": token,
                                         "result": {"reason": "Released"}})
            kept = [n for n in root.names() if n != name][:spec["keep"]]
            gone = root.prune(spec["keep"], name)
            log.info("release %s is current in %s (check passed after %d tries); removed "
                     "%s", name, place.target, tries, ", ".join(gone) or "nothing")
            # Drift only when this very release was in place and the link was moved;
            # a new tree under the same spec is a new release, not a correction.
            drift = (f"{place.target}/current was {before or 'absent'}, switched back to "
                     f"{want}",) if ctx.memory(key).get("release") == name else ()
            return Done("Released", f"{place.target}/current is release {name}",
                        {**observed, "previous": kept}, memory={"release": name},
                        changes=drift)
        why = (f"the health check ({health_check.describe(spec['check'] or {})}) failed "
               f"{tries} times" if spec["check"] else "restarting the units failed")
        record = self._record(place, spec, listing, name, before, why, output)
        self._journal(journal, key, {"phase": ROLLING_BACK, "token": token, "from": before,
                                     "to": want, "result": record})
        self._roll_back(root, spec, ctx, before, name)
        self._journal(journal, key, {"phase": FINISHED, "token": token, "result": record})
        log.warning("%s: %s", key, record["message"])
        return _rolled_back(record, token)

    def _restart_and_check(self, spec: dict[str, Any], ctx: Context
                           ) -> tuple[bool, int, str]:
        problems = self._units(spec, "restart")
        if problems:
            return False, 0, health_check.bounded("; ".join(problems))
        if spec["check"] is None:
            return True, 0, ""
        result = health_check.run_check(spec["check"], ctx, self.sleep)
        return result.healthy, result.tries, result.output

    @staticmethod
    def _units(spec: dict[str, Any], verb: str) -> list[str]:
        problems = []
        for unit in spec["restart"]:
            try:
                systemctl.run(verb, "--", unit, timeout=90)
            except systemctl.SystemctlError as exc:
                problems.append(str(exc))
        return problems

    def _roll_back(self, root: ReleaseRoot, spec: dict[str, Any], ctx: Context,
                   before: str | None, failed: str | None) -> None:
        """Put ``before`` back, restart (or, with nothing before, stop) the units, and
        remove the failed release folder."""
        root.flip(before)
        self._units(spec, "restart" if before is not None else "stop")
        if failed is not None and link_text(failed) != before and root.has(failed):
            root.remove(failed)

    def _undo(self, root: ReleaseRoot, spec: dict[str, Any], ctx: Context,
              entry: dict[str, Any], place: Place) -> dict[str, Any] | None:
        """Finish or undo a switch a cut-short pass left; the rollback's record, if any."""
        before = entry.get("from")
        rolling = entry.get("phase") == ROLLING_BACK
        log.warning("%s: a switch to %s was cut short; putting %s back", place.target,
                    entry.get("to"), before or "nothing")
        self._roll_back(root, spec, ctx, before,
                        release_of(entry.get("to")) if rolling else None)
        return entry.get("result") if rolling else None

    @staticmethod
    def _journal(journal: Any, key: str, entry: dict[str, Any], required: bool = False
                 ) -> None:
        if journal is None:
            return
        if required:
            journal.put(key, entry)  # not journaled, not switched: an OSError retries
            return
        with contextlib.suppress(OSError):
            journal.put(key, entry)

    @staticmethod
    def _observed(place: Place, spec: dict[str, Any], listing: Any, name: str
                  ) -> dict[str, Any]:
        return {"root": str(place.target), "source": spec["source"], "tree": listing.tree_id,
                "release": name, "files": len(listing.files)}

    def _record(self, place: Place, spec: dict[str, Any], listing: Any, name: str,
                before: str | None, why: str, output: str = "") -> dict[str, Any]:
        running = release_of(before) or before
        observed = {**self._observed(place, spec, listing, name),
                    "release": running, "failedRelease": name}
        if output:
            observed["checkOutput"] = output
        return {"reason": "RolledBack", "running": before, "observed": observed,
                "message": f"{why}: rolled back to "
                           f"{running or 'no release'}; {name} is not tried again until "
                           "the spec changes"}

    def plan(self, key: str, spec: dict[str, Any], ctx: Context) -> str | None:
        prepared = self._prepare(key, spec, ctx)
        if is_outcome(prepared):
            return would_fail(prepared)
        place, _listing, name, token = prepared
        if ctx.memory(key).get("failed") == token:
            return None  # rolled back for this spec; never retried until it changes
        try:
            with ReleaseRoot.open(str(place.root), (*place.folders, place.name),
                                  create=False) as root:
                if root.current() == link_text(name) and root.has(name):
                    return None
                before = root.current()
        except FileNotFoundError:
            before = None
        except UnsafePath as exc:
            return would_fail(Failed("PathNotAllowed", f"{place.target}: {exc.strerror}"))
        units = f", restart {', '.join(spec['restart'])}" if spec["restart"] else ""
        check = (f", then check {health_check.describe(spec['check'])}" if spec["check"]
                 else "")
        return (f"would switch {place.target}/current from {before or 'nothing'} to "
                f"release {name} ({spec['source']}){units}{check}")

    def plan_prune(self, key: str, spec: dict[str, Any], ctx: Context) -> str:
        return f"would remove {spec['root']}/current and {spec['root']}/releases/"

    def prune(self, key: str, spec: dict[str, Any], ctx: Context) -> None:
        place = place_under_roots(Path(spec["root"]), ctx)
        if isinstance(place, Failed):
            return
        try:
            with ReleaseRoot.open(str(place.root), (*place.folders, place.name),
                                  create=False) as root:
                root.flip(None)
                for name in root.names():
                    root.remove(name)
                root.sweep()
        except (FileNotFoundError, UnsafePath):
            pass  # gone, or behind a link: never the agent's to delete


def _rolled_back(record: dict[str, Any], token: str) -> Failed:
    return Failed("RolledBack", record["message"], record["observed"],
                  memory={"failed": token, "result": record})
