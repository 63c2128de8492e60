"""``Service``: keep a systemd unit running or stopped, enabled or not.

Called by the reconciler through the ``Kind`` interface; talks to systemd through
``kinds.systemctl``. Reports what systemd says (``ActiveState``, ``SubState``,
``UnitFileState``). A unit stopped by hand is started again on the next pass and
reported as drift; pruning a Service stops the unit (and leaves its enablement,
which may predate the agent, alone).

A signed spec only *names* a unit; the device decides which it may touch: the unit must
match the local ``[services] allowed`` list (names or glob patterns), and a critical
unit (``CRITICAL``: the agent's own, ssh, every target, systemd-*, getty, dbus,
networking...) is refused even then unless ``[services] force`` names it exactly. A
refused unit is never shown, started, stopped or pruned: ``ServiceNotAllowed`` or
``CriticalService``.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from giter_agent.config.agent_toml import Services
from giter_agent.kinds import systemctl
from giter_agent.kinds.base import (
    Context,
    Done,
    Failed,
    Kind,
    Outcome,
    Retry,
    would_fail,
)
from giter_agent.kinds.fields import Field, check_declared

UNIT_RE = re.compile(r"[A-Za-z0-9:_.@-]{1,200}\.(service|socket|timer|path|target|mount)")
# Units a spec may not act on unless [services] force names them: stopping one can cut
# the board off (ssh, network, dbus, a getty), power it down (every target: poweroff,
# rescue, reboot...) or stop the agent that would put it right (its own units).
CRITICAL = ("giter-*", "ssh.*", "sshd.*", "ssh@*", "sshd@*", "*.target", "systemd-*",
            "getty@*", "serial-getty@*", "autovt@*", "console-getty.*", "dbus.*",
            "dbus-broker.*", "networking.*", "NetworkManager*", "network-manager.*",
            "wpa_supplicant*", "dhcpcd.*", "ifup@*", "user@*", "user-runtime-dir@*",
            "init.scope", "-.mount", "*.slice", "polkit.*", "udev*", "cron.*")


def is_critical(unit: str) -> bool:
    return any(fnmatch.fnmatchcase(unit, pattern) for pattern in CRITICAL)


def unit_refusal(unit: str, services: Services) -> Failed | None:
    """Why the device will not act on ``unit`` (None: it may)."""
    if not any(fnmatch.fnmatchcase(unit, pattern) for pattern in services.allowed):
        allowed = ", ".join(services.allowed) or "none"
        return Failed("ServiceNotAllowed", f"{unit} is not in this device's [services] "
                      f"allowed list (allowed: {allowed})")
    if is_critical(unit) and unit not in services.force:
        return Failed("CriticalService", f"{unit} is critical to the board (ssh, network, "
                      "targets, the agent itself...): refused unless [services] force "
                      "names it")
    return None
STATES = ("running", "stopped")
# ActiveStates in which a unit counts as not running.
_DOWN = ("inactive", "failed")


def _state(props: dict[str, str]) -> str:
    return f"{props['ActiveState'] or 'unknown'} ({props['SubState'] or 'unknown'})"


def _observed(unit: str, props: dict[str, str]) -> dict[str, Any]:
    return {"unit": unit, "activeState": props["ActiveState"], "subState": props["SubState"],
            "unitFileState": props["UnitFileState"]}


def _needed(spec: dict[str, Any], props: dict[str, str]) -> list[tuple[str, str]]:
    """(systemctl verb, why) for each action that would bring the unit to the spec."""
    unit = spec["unit"]
    actions = []
    if spec["state"] == "running" and props["ActiveState"] != "active":
        actions.append(("start", f"{unit} is {_state(props)}, spec says running"))
    if spec["state"] == "stopped" and props["ActiveState"] not in _DOWN:
        actions.append(("stop", f"{unit} is {_state(props)}, spec says stopped"))
    enabled = props["UnitFileState"] in ("enabled", "enabled-runtime")
    if spec["enabled"] is True and not enabled:
        actions.append(("enable", f"{unit} is {props['UnitFileState'] or 'not enabled'}, "
                                  "spec says enabled"))
    if spec["enabled"] is False and enabled:
        actions.append(("disable", f"{unit} is enabled, spec says disabled"))
    return actions


class ServiceKind(Kind):
    kind = "Service"

    DESCRIPTION = "A systemd unit kept running or stopped, and optionally enabled."
    FIELDS = (
        Field("unit", "string", "a systemd unit name like app.service", required=True,
              pattern=r"(?!-)" + UNIT_RE.pattern,
              message="must be a systemd unit name like app.service"),
        Field("state", "string", "running or stopped", required=True, enum=STATES),
        Field("enabled", "boolean", "enable or disable it at boot (default: unchanged)"),
    )

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        check_declared(spec, self.FIELDS)
        return {"unit": spec["unit"], "state": spec["state"], "enabled": spec.get("enabled"),
                "prune": spec.get("prune", True)}

    @staticmethod
    def _show(unit: str) -> dict[str, str] | Outcome:
        try:
            props = systemctl.show(unit)
        except systemctl.SystemctlError as exc:
            if isinstance(exc, systemctl.SystemctlNotFound):
                return Failed(exc.reason, str(exc))
            return Retry(exc.reason, str(exc), 30)
        if props["LoadState"] in ("not-found", ""):
            # It may arrive with a package or a File resource later: keep looking.
            return Retry("UnitNotFound", f"systemd has no unit {unit}", 60)
        if props["LoadState"] == "masked":
            return Failed("UnitMasked", f"{unit} is masked; unmask it on the device first")
        return props

    def apply(self, key: str, spec: dict[str, Any], ctx: Context) -> Outcome:
        unit = spec["unit"]
        refused = unit_refusal(unit, ctx.services)
        if refused is not None:
            return refused
        props = self._show(unit)
        if not isinstance(props, dict):
            return props
        actions = _needed(spec, props)
        for verb, _why in actions:
            try:
                systemctl.run(verb, "--", unit, timeout=90)
            except systemctl.SystemctlError as exc:
                reason = {"start": "StartFailed", "stop": "StopFailed"}.get(verb, "EnableFailed")
                return Retry(reason, str(exc), 30, _observed(unit, props))
        if actions:
            props = self._show(unit)
            if not isinstance(props, dict):
                return props
        observed = _observed(unit, props)
        active = props["ActiveState"]
        if spec["state"] == "running" and active != "active":
            reason = "Starting" if active in ("activating", "reloading") else "StartFailed"
            return Retry(reason, f"{unit} is {_state(props)} after start", 10, observed)
        if spec["state"] == "stopped" and active not in _DOWN:
            return Retry("Stopping", f"{unit} is {_state(props)} after stop", 10, observed)
        if _needed(spec, props):
            return Retry("EnableFailed", f"{unit} is {props['UnitFileState']} after "
                         f"{'enable' if spec['enabled'] else 'disable'}", 30, observed)
        return Done("Running" if spec["state"] == "running" else "Stopped",
                    f"{unit} is {spec['state']}", observed,
                    changes=tuple(why for _verb, why in actions))

    def plan(self, key: str, spec: dict[str, Any], ctx: Context) -> str | None:
        refused = unit_refusal(spec["unit"], ctx.services)
        if refused is not None:
            return would_fail(refused)
        props = self._show(spec["unit"])
        if not isinstance(props, dict):
            return would_fail(props)
        actions = _needed(spec, props)
        if not actions:
            return None
        return "; ".join(f"would {verb}: {why}" for verb, why in actions)

    def plan_prune(self, key: str, spec: dict[str, Any], ctx: Context) -> str:
        refused = unit_refusal(spec["unit"], ctx.services)
        if refused is not None:
            return f"nothing to stop ({refused.reason})"
        return f"would stop {spec['unit']}"

    def prune(self, key: str, spec: dict[str, Any], ctx: Context) -> None:
        if unit_refusal(spec["unit"], ctx.services) is not None:
            return  # the agent never acted on it, so there is nothing of its to undo
        try:
            systemctl.run("stop", "--", spec["unit"], timeout=90)
        except systemctl.SystemctlError as exc:
            raise OSError(str(exc)) from exc
