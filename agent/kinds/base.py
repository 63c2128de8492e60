"""What every kind implements, the typed outcomes a handler returns, and its context.

A kind validates its ``spec`` (schema), applies it to the device, says what applying
would change (``plan``), and undoes it when the resource is pruned. Outcomes are
typed by what happens next, as in kopf and controller-runtime: ``Done`` (Ready),
``Retry`` (try again after N seconds, backed off), ``Failed`` (permanent: only a new
spec helps). The reconciler (``reconcile.engine``) turns them into conditions; built-in
kinds (``giter_agent.kinds.*``) and plug-ins (entry point group ``kinds``)
implement them. ``Context`` is everything a handler may touch, passed in.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from giter_agent.config.agent_toml import Services
from giter_agent.config.settings import Settings, SettingsConfig, resolve
from giter_agent.core.digest import sha256_hex
from giter_agent.core.errors import ResourceError
from giter_agent.core.named_tuple import NamedTuple
from giter_agent.core.times import rfc3339 as rfc3339  # re-exported: the kinds stamp status with it
from giter_agent.kinds.fields import Field, check_types
from giter_agent.spec import windows
from giter_agent.state.records import ResourceRecord

if TYPE_CHECKING:
    from typing_extensions import TypeIs  # typing.TypeIs from Python 3.13

    from giter_agent.device.board import Board  # passed in; kinds never load the board code


class Condition(NamedTuple):
    """A kind-specific condition (``AboveThreshold``, ``Drifted``) beside ``Ready``.

    ``blocks_ready``: while this condition is True the resource is not Ready (an
    observe-only resource that drifted); an observation such as a sensor above its
    threshold leaves Ready alone. The reconciler adds ``lastTransitionTime``.
    """

    type: str
    status: bool
    reason: str
    message: str
    blocks_ready: bool = False


# The outcomes are NamedTuples (docs/decisions.md, "Records read on every start are
# NamedTuples"), so an outcome IS a tuple: a helper that returns "a tuple of results, or
# an outcome" is told apart with ``is_outcome`` first, never with ``isinstance(x, tuple)``.
class Done(NamedTuple):
    """The spec is in effect. ``changes``: what this pass had to put right (drift
    evidence, when the spec itself did not change); ``memory``: kept in the record for
    the next pass (None keeps the previous memory)."""

    reason: str
    message: str
    observed: dict[str, Any] | None = None  # what the kind saw (None: nothing to say)
    conditions: tuple[Condition, ...] = ()
    changes: tuple[str, ...] = ()
    memory: dict[str, Any] | None = None


class Retry(NamedTuple):
    """Not in effect yet; try again after ``after`` seconds (the reconciler backs off)."""

    reason: str
    message: str
    after: float = 30.0
    observed: dict[str, Any] | None = None
    conditions: tuple[Condition, ...] = ()
    memory: dict[str, Any] | None = None


class Failed(NamedTuple):
    """Cannot be put in effect; only a new spec (or local config) helps."""

    reason: str
    message: str
    observed: dict[str, Any] | None = None
    conditions: tuple[Condition, ...] = ()
    memory: dict[str, Any] | None = None


Outcome = Done | Retry | Failed


def is_outcome(value: object) -> TypeIs[Outcome]:
    """Is ``value`` an outcome rather than a kind's own results (a tuple too)?"""
    return isinstance(value, Done | Retry | Failed)


class Context:
    """What handlers may touch, passed in (never global): board, pins, roots, clock.

    Made once per process and changed as passes go (``outputs``, ``records``,
    ``current`` ...): a plain class with ``__slots__`` (docs/decisions.md, "Records read
    on every start are NamedTuples"). A keyword left out gets the default it always had
    (a dict, ``Services()``, ``/sys``: a fresh one for each context).
    """

    __slots__ = ("_factory", "_wakeups", "agent_envs", "artifacts", "board",
                 "busy_allowance", "clock", "command_journal", "commands", "current",
                 "devices", "euid", "files_roots", "generations", "identity", "lasting",
                 "on_busy", "outputs", "package_tools", "packages_allowed",
                 "pin_factory_maker", "records", "release_journal", "services", "settings",
                 "settings_config", "sysfs", "update_journal")

    def __init__(self, board: Board, files_roots: tuple[Path, ...],
                 pin_factory_maker: Callable[[Board], Any],
                 clock: Callable[[], float] = time.time,
                 devices: dict[str, Any] | None = None, outputs: Any = None,
                 settings: dict[str, Any] | None = None,
                 settings_config: SettingsConfig | None = None,
                 commands: Mapping[str, tuple[str, ...]] | None = None,
                 services: Services | None = None, command_journal: Any = None,
                 packages_allowed: tuple[str, ...] = (), package_tools: Any = None,
                 release_journal: Any = None, update_journal: Any = None,
                 agent_envs: Any = None, busy_allowance: float = 0.0,
                 on_busy: Callable[[float], None] | None = None, sysfs: Path | None = None,
                 lasting: bool = True, euid: Callable[[], int] = os.geteuid,
                 identity: Callable[[], Any] | None = None, artifacts: Any = None,
                 records: dict[str, ResourceRecord] | None = None,
                 generations: dict[str, int | None] | None = None,
                 current: str | None = None, _factory: Any = None,
                 _wakeups: dict[str | None, float] | None = None) -> None:
        self.board = board
        self.files_roots = files_roots
        self.pin_factory_maker = pin_factory_maker
        self.clock = clock
        # Live devices by resource key (a Sensor's sampler), so a daemon keeps
        # summarising between passes. Each value has ``close()``.
        self.devices: dict[str, Any] = {} if devices is None else devices
        # The outputs (Output kind) this process drives, or plans for the daemon to drive
        # (``device.outputs``: ``HeldOutputs`` on this context's pin factory, or the pass
        # worker's ``PlannedOutputs``), set by whoever builds the context (``Agent``).
        self.outputs = outputs
        # Remote overrides of the agent's own settings (the Agent kind writes them; the
        # daemon reads them through agent.settings.effective).
        self.settings: dict[str, Any] = {} if settings is None else settings
        # The local [agent] section: defaults and bounds for those overrides.
        self.settings_config = SettingsConfig() if settings_config is None else \
            settings_config
        # The local [commands] allowlist: name -> argv.
        self.commands: Mapping[str, tuple[str, ...]] = {} if commands is None else commands
        # The local [services] allowlist: which units a Service may act on.
        self.services = Services() if services is None else services
        # Where a Command is recorded as started before it runs (state.command_journal);
        # None: not journaled (a dry run, a test without a state directory).
        self.command_journal = command_journal
        # The local [packages] allowlist (globs), and Debian's tools with the database
        # they work on (kinds.debian.PackageTools; None: the host's).
        self.packages_allowed = packages_allowed
        self.package_tools = package_tools
        # Where a Release switch is recorded before the link moves (state.release_journal);
        # None: not journaled (a dry run, a test without a state directory).
        self.release_journal = release_journal
        # The agent's own update: its journal (state.update_journal) and its environments
        # (kinds.agent_envs.AgentEnvs); None: no state directory (a dry run, a test).
        self.update_journal = update_journal
        self.agent_envs = agent_envs
        # Seconds a pass may run beyond the daemon's usual bound because a kind is
        # waiting on something bounded of its own (a Command's timeout). The daemon zeroes
        # it when a pass starts and keeps feeding systemd's watchdog within it
        # (``allow_busy``).
        self.busy_allowance = busy_allowance
        # Told the new allowance each time it grows (the daemon's pass worker passes it
        # on to the daemon at once, which feeds the watchdog); None: nobody outside
        # listens.
        self.on_busy = on_busy
        # Where sysfs is mounted (thermal zones, 1-wire); a temp folder in tests.
        self.sysfs = Path("/sys") if sysfs is None else sysfs
        # Does this process stay to hold what it sets (the daemon, serve-serial)? A
        # one-shot `giter-agent sync` does not: a blink or software PWM would die with it.
        self.lasting = lasting
        # The effective user id (File owner/group need root); injectable for tests.
        self.euid = euid
        # The device's own ed25519 private key, loaded when a Secret needs it (None: the
        # agent has none, and every Secret fails NoDeviceKey).
        self.identity = identity
        # The artifacts of the spec tree being applied (``history.artifacts.TreeArtifacts``:
        # ``stat(path)`` -> path/oid/size, ``listing(folder)`` -> tree id and files,
        # ``copy(path, out)`` -> sha256, streamed), set for each pass by whoever runs it
        # (the applier, ``plan``); None: no verified tree to read from. Kinds reach the
        # history only through it.
        self.artifacts = artifacts
        # Set by the reconciler for each pass: the previous pass's records, and each
        # resource's metadata.generation. Kinds read them, never write them.
        self.records: dict[str, ResourceRecord] = {} if records is None else records
        self.generations: dict[str, int | None] = {} if generations is None else generations
        # The resource whose handler runs now (set by the reconciler): a wakeup it asks
        # for is filed under it, so a wakeup pass can visit just the resources that are due.
        self.current = current
        self._factory = _factory
        self._wakeups: dict[str | None, float] = {} if _wakeups is None else _wakeups

    def allow_busy(self, seconds: float) -> None:
        """Say this pass will legitimately take up to ``seconds`` longer (a command)."""
        self.busy_allowance += seconds
        if self.on_busy is not None:
            self.on_busy(self.busy_allowance)

    def request_wakeup(self, at: float, key: str | None = None) -> None:
        """Ask for another pass at time ``at`` (a sensor's next sample, a retry), for
        resource ``key`` (by default the one being reconciled)."""
        key = key if key is not None else self.current
        self._wakeups[key] = min(at, self._wakeups.get(key, at))

    def next_wakeup(self) -> float | None:
        """The earliest requested pass time, or None; requests are consumed by passes."""
        return min(self._wakeups.values(), default=None)

    def due(self, now: float) -> set[str | None]:
        """The resources whose wakeup is due at ``now`` (None: a request made outside
        any resource's handler)."""
        return {key for key, at in self._wakeups.items() if at <= now}

    def wakeups(self) -> list[tuple[str | None, float]]:
        """Every pending wakeup request, as (resource key or None, time) pairs."""
        return sorted(self._wakeups.items(), key=lambda item: (item[1], item[0] or ""))

    def restore_wakeups(self, pairs: Iterable[tuple[str | None, float]]) -> None:
        """Take over the requests ``wakeups()`` gave (another process's passes made them)."""
        self._wakeups = {key: float(at) for key, at in pairs}

    def clear_wakeups(self, keys: Iterable[str | None] | None = None) -> None:
        """Forget the wakeups of ``keys`` (all by default): their pass asks afresh."""
        if keys is None:
            self._wakeups.clear()
            return
        for key in keys:
            self._wakeups.pop(key, None)

    def memory(self, key: str) -> dict[str, Any]:
        """What the resource's kind asked to remember at the last pass (``Done.memory``)."""
        record = self.records.get(key)
        return dict(record.memory or {}) if record is not None else {}

    def effective_settings(self) -> Settings:
        """The agent's settings now: local defaults with the remote overrides applied."""
        return resolve(self.settings_config, self.settings)

    @property
    def pin_factory(self) -> Any:
        if self._factory is None:
            self._factory = self.pin_factory_maker(self.board)
        return self._factory

    def close(self) -> None:
        for dev in self.devices.values():
            dev.close()
        self.devices.clear()
        if self.outputs is not None:
            self.outputs.close_all()


class Kind:
    """Base class of built-in and plug-in kinds.

    ``validate`` is the schema; ``apply`` acts and says what it observed; ``plan`` says
    what ``apply`` would change without changing anything (``giter-agent plan``, and
    the drift report of an observe-only resource); ``prune`` undoes the effect.
    """

    kind: str  # the resource kind it serves; a class attribute, set by each kind
    # Fields every kind accepts; the reconciler, not the kind, acts on them.
    COMMON: ClassVar[frozenset[str]] = frozenset({"prune", "dependsOn", "reconcile",
                                                   "window"})
    # The kind's own spec fields, declared once (``giter_agent.kinds.fields``): its
    # ``validate`` checks them through ``check_declared`` and its JSON Schema is made
    # from them. None: the kind has no declared schema (a plug-in may not have one).
    FIELDS: ClassVar[tuple[Field, ...] | None] = None
    DESCRIPTION: ClassVar[str] = ""
    # False for kinds that only observe (Sensor): `reconcile: observe-only` changes
    # nothing for them, so they are applied as usual.
    ACTS: ClassVar[bool] = True
    # What a resource of this kind that leaves the spec without saying ``prune`` gets:
    # undone (True), or kept (Package: removing software is rarely what a fleet means).
    PRUNE_DEFAULT: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A kind's declared fields are checked once, when its class is made: a type
        that is not a JSON Schema type is a mistake in the kind, not in a spec."""
        super().__init_subclass__(**kwargs)
        if cls.FIELDS is not None:
            check_types(cls.FIELDS)

    @classmethod
    def spec_schema(cls) -> dict[str, Any]:
        """JSON Schema of ``spec``, made from ``FIELDS`` (any mapping when undeclared)."""
        from giter_agent.kinds.fields import spec_schema

        if cls.FIELDS is None:
            return {"type": "object"}
        return spec_schema(cls.FIELDS, COMMON_FIELDS)

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Return the normalised spec or raise ``ResourceError`` naming the field."""
        raise ResourceError(f"kind {self.kind} has no schema", reason="InvalidResource")

    def apply(self, key: str, spec: dict[str, Any], ctx: Context) -> Outcome:
        raise ResourceError(f"kind {self.kind} cannot apply", reason="InvalidResource")

    def plan(self, key: str, spec: dict[str, Any], ctx: Context) -> str | None:
        """What ``apply`` would change, in one line, or None when nothing would.

        Must not change anything (no writes, no pins claimed). The default knows only
        whether the last pass put this very spec in effect.
        """
        if applied_before(key, spec, ctx):
            return None
        return f"would apply the {self.kind} spec"

    def plan_prune(self, key: str, spec: dict[str, Any], ctx: Context) -> str:
        """What ``prune`` would undo, in one line."""
        return f"would undo the {self.kind}'s effect"

    def prune(self, key: str, spec: dict[str, Any], ctx: Context) -> None:
        """Undo the resource's effect on the device (default: nothing to undo)."""


class Common(NamedTuple):
    """The spec fields every kind accepts and the reconciler acts on."""

    prune: bool = True
    depends_on: tuple[str, ...] = ()
    observe_only: bool = False
    window: str | None = None  # a MaintenanceWindow's name: changes wait for it


RECONCILE_MODES = ("apply", "observe-only")
_DEP_RE = re.compile(r"([A-Za-z][A-Za-z0-9]{0,62}/)?[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?")

# The fields every kind accepts and the reconciler acts on (docs/kinds.md).
COMMON_FIELDS = (
    Field("prune", "boolean", "undo the resource's effect when it leaves the spec",
          default=True),
    Field("dependsOn", "array", "apply after these resources are Ready (\"name\" or "
          "\"Kind/name\")", max_items=64,
          items=Field("dependsOn", "string", "a resource name", pattern=_DEP_RE.pattern),
          message="must be a list of resource names (\"name\" or \"Kind/name\")"),
    Field("reconcile", "string", "apply: act; observe-only: report drift, never act",
          enum=RECONCILE_MODES, default="apply"),
    Field("window", "string", "apply changes only inside this MaintenanceWindow (by name)",
          pattern=windows.NAME_PATTERN,
          message="must name a MaintenanceWindow (lower-case letters, digits, '-' and '.')"),
)


def common_fields(spec: dict[str, Any]) -> Common:
    """Validate ``prune``, ``dependsOn``, ``reconcile`` and ``window``; ``ResourceError``
    names the field."""
    for f in COMMON_FIELDS:
        if f.name in spec:
            f.validate(spec[f.name])
    deps = spec.get("dependsOn", [])
    return Common(prune=spec.get("prune", True), depends_on=tuple(dict.fromkeys(deps)),
                  observe_only=spec.get("reconcile", "apply") == "observe-only",
                  window=spec.get("window"))


def fingerprint(spec: dict[str, Any]) -> str:
    """A short stable digest of a validated spec: did the last pass apply this one?"""
    text = json.dumps(spec, sort_keys=True, default=repr, separators=(",", ":"))
    return sha256_hex(text.encode())[:16]


def applied_before(key: str, spec: dict[str, Any], ctx: Context) -> bool:
    """True when the last pass left this very (validated) spec Ready."""
    record = ctx.records.get(key)
    return record is not None and record.fingerprint == fingerprint(spec)


def did_you_mean(name: str, known: set[str] | frozenset[str]) -> str:
    """`` (did you mean onTime?)`` for a misspelt field name, or ``""``."""
    import difflib

    by_fold = {k.casefold(): k for k in known}
    if name.casefold() in by_fold:
        return f" (did you mean {by_fold[name.casefold()]}?)"
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def check_fields(spec: dict[str, Any], required: set[str], optional: set[str]) -> None:
    """Refuse unknown and missing fields, naming them (and the field probably meant)."""
    allowed = required | optional | Kind.COMMON
    unknown = sorted(str(k) for k in spec if k not in allowed)
    if unknown:
        named = ", ".join(f"{k}{did_you_mean(k, allowed)}" for k in unknown)
        raise ResourceError(f"spec: unknown field(s) {named}", reason="InvalidSpec")
    missing = sorted(required - set(spec))
    if missing:
        raise ResourceError(f"spec: missing field(s) {', '.join(missing)}", reason="InvalidSpec")
    common_fields(spec)


def number(spec: dict[str, Any], name: str, default: float | None, lo: float,
           hi: float) -> float:
    """A number field in ``lo..hi`` (``default`` when absent; None makes it required)."""
    value = spec.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ResourceError(f"spec.{name} must be a number from {lo:g} to {hi:g}, "
                            f"got {value!r}", reason="InvalidSpec")
    return float(value)


def integer(spec: dict[str, Any], name: str, default: int | None, lo: int, hi: int) -> int:
    """A whole-number field in ``lo..hi`` (``default`` when absent)."""
    value = spec.get(name, default)
    if type(value) is not int or not lo <= value <= hi:
        raise ResourceError(f"spec.{name} must be a whole number from {lo} to {hi}, "
                            f"got {value!r}", reason="InvalidSpec")
    return value


def boolean(spec: dict[str, Any], name: str, default: bool | None) -> bool:
    value = spec.get(name, default)
    if not isinstance(value, bool):
        raise ResourceError(f"spec.{name} must be true or false", reason="InvalidSpec")
    return value


def would_fail(outcome: Outcome) -> str:
    """How ``plan`` words an outcome that ``apply`` would end in without acting."""
    return f"would fail: {outcome.reason}: {outcome.message}"
