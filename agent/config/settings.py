"""The agent's own run-time settings: local defaults and bounds, remote overrides, the result.

The local config's ``[agent]`` section sets each setting's default and the range a
publisher may move it within (``SettingsConfig``, parsed here for ``config.agent_toml``).
The ``Agent`` kind writes validated overrides into ``Context.settings``; the daemon
calls ``effective(config, agent.ctx.settings)`` after each pass to learn the report
interval, sync interval and log level it should use now. Sensors read the report
interval through ``Context.effective_settings()``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from giter_agent.core.named_tuple import NamedTuple

if TYPE_CHECKING:
    from giter_agent.config.agent_toml import Config

LOG_LEVELS = ("error", "warning", "info", "debug")

# setting -> (spec field of the Agent kind, default, lowest allowed min, highest allowed max)
_NUMERIC = {
    "report_interval": ("reportInterval", 900.0, 10.0, 7 * 86400.0),
    "sync_interval": ("syncInterval", 300.0, 10.0, 7 * 86400.0),
}
SPEC_FIELDS = {"report_interval": "reportInterval", "sync_interval": "syncInterval",
               "log_level": "logLevel"}


class SettingsConfig(NamedTuple):
    """The ``[agent]`` section: a default and the remote-override bounds of each setting."""

    report_interval: float = 900.0
    report_interval_min: float = 60.0
    report_interval_max: float = 86400.0
    sync_interval: float = 300.0
    sync_interval_min: float = 30.0
    sync_interval_max: float = 86400.0
    log_level: str = "warning"
    # The levels a publisher may choose; "debug" is left out by default because it can
    # fill a small board's journal.
    log_levels: tuple[str, ...] = ("error", "warning", "info")


class Settings(NamedTuple):
    """What the agent uses now: defaults with the remote overrides applied."""

    report_interval: float
    sync_interval: float
    log_level: str


SECTION_KEYS = frozenset(SettingsConfig._fields)


def parse_section(raw: Mapping[str, Any], fail: Callable[[str, str], Exception]
                  ) -> SettingsConfig:
    """Validate the ``[agent]`` table (``fail(key, problem)`` builds the ConfigError)."""
    values: dict[str, Any] = {}
    for name, (_field, _default, lo, hi) in _NUMERIC.items():
        for key in (name, f"{name}_min", f"{name}_max"):
            if key not in raw:
                continue
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not lo <= value <= hi:
                raise fail(f"agent.{key}", f"must be a number of seconds from {lo:g} to "
                           f"{hi:g}, got {value!r}")
            values[key] = float(value)
    if "log_levels" in raw:
        levels = raw["log_levels"]
        if not isinstance(levels, list) or not levels \
                or any(level not in LOG_LEVELS for level in levels):
            raise fail("agent.log_levels", f"must be a non-empty list of {', '.join(LOG_LEVELS)}")
        values["log_levels"] = tuple(dict.fromkeys(levels))
    if "log_level" in raw:
        if raw["log_level"] not in LOG_LEVELS:
            raise fail("agent.log_level", f"must be one of {', '.join(LOG_LEVELS)}, "
                       f"got {raw['log_level']!r}")
        values["log_level"] = raw["log_level"]
    section = SettingsConfig(**values)
    for name in _NUMERIC:
        lo, default, hi = (getattr(section, f"{name}_min"), getattr(section, name),
                           getattr(section, f"{name}_max"))
        if not lo <= default <= hi:
            raise fail(f"agent.{name}", f"default {default:g} is outside "
                       f"{name}_min..{name}_max ({lo:g}..{hi:g})")
    return section


def check_override(section: SettingsConfig, name: str, value: Any) -> str | None:
    """Why ``value`` may not override setting ``name`` here, or None if it may."""
    spec_field = SPEC_FIELDS[name]
    if name == "log_level":
        if value not in section.log_levels:
            return (f"spec.{spec_field} {value!r} is not allowed here; the local config "
                    f"allows {', '.join(section.log_levels)} ([agent] log_levels)")
        return None
    lo, hi = getattr(section, f"{name}_min"), getattr(section, f"{name}_max")
    if not lo <= value <= hi:
        return (f"spec.{spec_field} {value:g} is outside the local bounds {lo:g}..{hi:g} "
                f"([agent] {name}_min/{name}_max)")
    return None


def resolve(section: SettingsConfig, overrides: Mapping[str, Any]) -> Settings:
    """Defaults from ``section`` with every in-bounds override applied.

    Overrides were checked when the Agent kind accepted them; one that is out of
    bounds anyway (the local config changed since) is ignored rather than trusted.
    """
    chosen: dict[str, Any] = {name: getattr(section, name) for name in SPEC_FIELDS}
    for name, value in overrides.items():
        if name in SPEC_FIELDS and check_override(section, name, value) is None:
            chosen[name] = float(value) if name in _NUMERIC else value
    return Settings(**chosen)


def effective(config: Config, overrides: Mapping[str, Any]) -> Settings:
    """The settings the agent should run with: ``config``'s ``[agent]`` plus ``overrides``."""
    return resolve(config.agent, overrides)
