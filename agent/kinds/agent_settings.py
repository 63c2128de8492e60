"""``Agent``: the agent's own settings, changed remotely within locally set bounds.

Called by the reconciler through the ``Kind`` interface. The spec may set
``reportInterval``, ``syncInterval`` (seconds) and ``logLevel``; each must lie within
the device's ``[agent]`` bounds (``config.settings``), or the resource fails with
``OutOfBounds`` and the last accepted overrides stay. Accepted overrides go into
``ctx.settings``, where sensors (report interval) and the daemon
(``config.settings.effective``) read them. One per device, named ``agent``: a
device's own ``Agent/agent`` then overrides its group's, as any resource does.
Overrides live in memory; after a restart the first pass sets them again.
``defaultWindow`` names the ``MaintenanceWindow`` that every resource without a
``window`` of its own waits for (the reconciler reads it: ``giter_agent.spec.windows``).
"""

from __future__ import annotations

from typing import Any

from giter_agent.config.settings import LOG_LEVELS, SPEC_FIELDS, check_override
from giter_agent.kinds.base import (
    Context,
    Done,
    Failed,
    Kind,
    Outcome,
    applied_before,
)
from giter_agent.kinds.fields import Field, check_declared
from giter_agent.spec import windows

NAME = "agent"


class AgentKind(Kind):
    kind = "Agent"

    DESCRIPTION = ("The agent's own intervals and log level, within the device's [agent] "
                   "bounds; named agent.")
    FIELDS = (
        Field(SPEC_FIELDS["report_interval"], "number", "seconds between status reports "
              "(within the device's [agent] bounds)", minimum=1, maximum=30 * 86400),
        Field(SPEC_FIELDS["sync_interval"], "number", "seconds between syncs (within the "
              "device's [agent] bounds)", minimum=1, maximum=30 * 86400),
        Field(SPEC_FIELDS["log_level"], "string", "the agent's log level", enum=LOG_LEVELS),
        Field(windows.DEFAULT_WINDOW_FIELD, "string", "the MaintenanceWindow every "
              "resource without a window of its own waits for", pattern=windows.NAME_PATTERN,
              message="must name a MaintenanceWindow"),
    )

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        check_declared(spec, self.FIELDS)
        overrides: dict[str, Any] = {}
        for name, spec_field in SPEC_FIELDS.items():
            if spec_field in spec:
                raw = spec[spec_field]
                overrides[name] = raw if name == "log_level" else float(raw)
        return {"overrides": overrides, "prune": spec.get("prune", True)}

    @staticmethod
    def _check(key: str, spec: dict[str, Any], ctx: Context) -> Failed | None:
        if key != f"{AgentKind.kind}/{NAME}":
            return Failed("UnexpectedName", f"the Agent resource must be named {NAME!r} (one "
                          "per device; a device's own overrides its group's)")
        problems = [p for name, value in spec["overrides"].items()
                    if (p := check_override(ctx.settings_config, name, value))]
        if problems:
            return Failed("OutOfBounds", "; ".join(problems) + "; the previous settings stay")
        return None

    def apply(self, key: str, spec: dict[str, Any], ctx: Context) -> Outcome:
        failed = self._check(key, spec, ctx)
        if failed is not None:
            return failed
        ctx.settings.clear()
        ctx.settings.update(spec["overrides"])
        now = ctx.effective_settings()
        observed = {SPEC_FIELDS[name]: getattr(now, name) for name in SPEC_FIELDS}
        return Done("Applied", "the agent runs with these settings", {"effective": observed})

    def plan(self, key: str, spec: dict[str, Any], ctx: Context) -> str | None:
        failed = self._check(key, spec, ctx)
        if failed is not None:
            return f"would fail: {failed.reason}: {failed.message}"
        if ctx.settings == spec["overrides"] or applied_before(key, spec, ctx):
            return None
        wanted = ", ".join(f"{SPEC_FIELDS[n]}={v:g}" if isinstance(v, float)
                           else f"{SPEC_FIELDS[n]}={v}" for n, v in spec["overrides"].items())
        return f"would set {wanted or 'the local defaults'}"

    def plan_prune(self, key: str, spec: dict[str, Any], ctx: Context) -> str:
        return "would return to the local [agent] defaults"

    def prune(self, key: str, spec: dict[str, Any], ctx: Context) -> None:
        ctx.settings.clear()
