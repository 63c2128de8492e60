"""The Agent kind, agent.settings, and the [agent] and [commands] config sections."""

from __future__ import annotations

from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory
from support.kinds import doc, make_ctx, ready, specset

from giter_agent.config.agent_toml import from_dict
from giter_agent.config.settings import Settings, SettingsConfig, effective
from giter_agent.core.errors import ConfigError
from giter_agent.kinds import builtin_kinds
from giter_agent.reconcile.engine import reconcile

BASE = {"device_id": "pi-1", "state_dir": "state", "board": "generic-mock",
        "allowed_signers": "signers"}


def config(**sections):
    return from_dict({**BASE, **sections}, base=Path("/etc/giter-agent"))


@pytest.fixture
def ctx(tmp_path):
    c = make_ctx(tmp_path, MockFactory(),
                 settings_config=SettingsConfig(report_interval=900, report_interval_min=60,
                                                report_interval_max=3600))
    yield c
    c.close()


def agent_doc(name: str = "agent", **spec) -> bytes:
    return doc("Agent", name, spec)


def test_overrides_within_bounds_take_effect(ctx):
    result = reconcile(specset(agent_doc(reportInterval=300, logLevel="info")), ctx,
                       builtin_kinds(), {}, "c1")
    rec = result.records["Agent/agent"]
    assert ready(rec) == (True, "Applied")
    assert ctx.settings == {"report_interval": 300.0, "log_level": "info"}
    assert ctx.effective_settings() == Settings(report_interval=300.0, sync_interval=300.0,
                                                log_level="info")
    assert rec.status["observed"] == {"effective": {"reportInterval": 300.0,
                                                       "syncInterval": 300.0,
                                                       "logLevel": "info"}}


def test_out_of_bounds_fails_and_the_last_overrides_stay(ctx):
    kinds = builtin_kinds()
    first = reconcile(specset(agent_doc(reportInterval=300)), ctx, kinds, {}, "c1")
    second = reconcile(specset(agent_doc(reportInterval=10, logLevel="debug")), ctx, kinds,
                       first.records, "c2")
    rec = second.records["Agent/agent"]
    assert ready(rec) == (False, "OutOfBounds")
    message = rec.status["conditions"][0]["message"]
    assert "reportInterval 10 is outside the local bounds 60..3600" in message
    assert "logLevel 'debug' is not allowed here" in message
    assert ctx.settings == {"report_interval": 300.0}


def test_one_agent_resource_named_agent(ctx):
    result = reconcile(specset(agent_doc("tuning", reportInterval=300)), ctx, builtin_kinds(),
                       {}, "c1")
    assert ready(result.records["Agent/tuning"]) == (False, "UnexpectedName")
    assert ctx.settings == {}


def test_device_resource_overrides_the_group_one(ctx):
    from giter_agent.spec.resources import select

    files = [("devices/d/agent.yaml", agent_doc(reportInterval=120)),
             ("groups/all/agent.yaml", agent_doc(reportInterval=1800))]
    result = reconcile(select(files), ctx, builtin_kinds(), {}, "c1")
    assert ready(result.records["Agent/agent"]) == (True, "Applied")
    assert ctx.effective_settings().report_interval == 120.0


def test_prune_returns_to_local_defaults(ctx):
    first = reconcile(specset(agent_doc(syncInterval=600)), ctx, builtin_kinds(), {}, "c1")
    assert ctx.effective_settings().sync_interval == 600.0
    reconcile(specset(), ctx, builtin_kinds(), first.records, "c2")
    assert ctx.settings == {} and ctx.effective_settings().sync_interval == 300.0


@pytest.mark.parametrize("spec", [{"reportInterval": "often"}, {"logLevel": "loud"},
                                  {"syncInterval": 0}, {"colour": "red"}])
def test_agent_schema(ctx, spec):
    result = reconcile(specset(agent_doc(**spec)), ctx, builtin_kinds(), {}, "c1")
    assert ready(result.records["Agent/agent"]) == (False, "InvalidSpec")


def test_effective_reads_the_config_section():
    cfg = config(agent={"report_interval": 600, "report_interval_min": 300,
                        "sync_interval": 120, "log_level": "info",
                        "log_levels": ["warning", "info", "debug"]})
    assert effective(cfg, {}) == Settings(600.0, 120.0, "info")
    assert effective(cfg, {"report_interval": 400, "log_level": "debug"}) == \
        Settings(400.0, 120.0, "debug")
    # An override the local config no longer allows is ignored, not trusted.
    assert effective(cfg, {"report_interval": 60}).report_interval == 600.0
    assert effective(config(), {}) == Settings(900.0, 300.0, "warning")


@pytest.mark.parametrize("section, key", [
    ({"report_interval": "soon"}, "agent.report_interval"),
    ({"report_interval": 5}, "agent.report_interval"),
    ({"report_interval_min": 1000, "report_interval": 900}, "agent.report_interval"),
    ({"log_level": "chatty"}, "agent.log_level"),
    ({"log_levels": []}, "agent.log_levels"),
    ({"pager": True}, "agent.pager"),
])
def test_agent_section_errors_name_the_key(section, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config(agent=section)


def test_commands_section():
    cfg = config(commands={"allowed": {"restart-app": ["/usr/bin/systemctl", "restart", "app"],
                                       "reboot": ["/sbin/reboot"]}})
    assert cfg.commands == {"restart-app": ("/usr/bin/systemctl", "restart", "app"),
                            "reboot": ("/sbin/reboot",)}
    assert config().commands == {}


@pytest.mark.parametrize("allowed, key", [
    ({"x": "rm -rf /"}, "commands.allowed.x"),
    ({"x": []}, "commands.allowed.x"),
    ({"x": ["systemctl", "restart"]}, "commands.allowed.x"),
    ({"Bad Name": ["/bin/true"]}, "commands.allowed.Bad Name"),
    ("reboot", "commands.allowed"),
])
def test_commands_section_errors_name_the_key(allowed, key):
    with pytest.raises(ConfigError) as err:
        config(commands={"allowed": allowed})
    assert f"{key}:" in str(err.value)
