"""The Service kind against a fake ``systemctl`` first on PATH (tests/fake_systemctl.py)."""

from __future__ import annotations

import pytest
from support.kinds import condition, doc, ready, specset
from support.systemd import FakeSystemd, install

from giter_agent.config.agent_toml import Services
from giter_agent.kinds import builtin_kinds
from giter_agent.reconcile.engine import reconcile


@pytest.fixture
def ctx(ctx):
    """The shared context, with the units these tests use on the device's allowlist."""
    ctx.services = Services(allowed=("app.service", "other.service"))
    return ctx


@pytest.fixture
def systemd(tmp_path, monkeypatch) -> FakeSystemd:
    return install(tmp_path, monkeypatch)


def svc(name: str = "app", **spec) -> bytes:
    return doc("Service", name, {"unit": "app.service", "state": "running", **spec})


def test_starts_and_enables_then_reports_systemd_state(ctx, systemd):
    systemd.add("app.service")
    result = reconcile(specset(svc(enabled=True)), ctx, builtin_kinds(), {}, "c1")
    rec = result.records["Service/app"]
    assert ready(rec) == (True, "Running")
    assert rec.status["observed"] == {"unit": "app.service", "activeState": "active",
                                         "subState": "running", "unitFileState": "enabled"}
    assert systemd.acted() == ["start app.service", "enable app.service"]
    assert systemd.units()["app.service"]["active"] == "active"
    # In sync: the next pass only looks.
    again = reconcile(specset(svc(enabled=True)), ctx, builtin_kinds(), result.records, "c1")
    assert again.records == result.records
    assert systemd.acted() == ["start app.service", "enable app.service"]


def test_stopped_and_disabled(ctx, systemd):
    systemd.add("app.service", active="active", sub="running", enabled="enabled")
    result = reconcile(specset(svc(state="stopped", enabled=False)), ctx, builtin_kinds(), {},
                       "c1")
    assert ready(result.records["Service/app"]) == (True, "Stopped")
    assert systemd.acted() == ["stop app.service", "disable app.service"]


def test_stopped_by_hand_is_started_again_as_drift(ctx, systemd, clock):
    systemd.add("app.service")
    first = reconcile(specset(svc()), ctx, builtin_kinds(), {}, "c1")
    systemd.add("app.service", active="inactive", sub="dead")  # `systemctl stop` by hand
    clock.advance(300)
    second = reconcile(specset(svc()), ctx, builtin_kinds(), first.records, "c1")
    rec = second.records["Service/app"]
    assert ready(rec) == (True, "Running")
    assert rec.status["drift"] == {
        "corrections": 1, "lastCorrected": "2027-01-15T08:05:00Z",
        "changes": ["app.service is inactive (dead), spec says running"]}


def test_observe_only_reports_and_leaves_the_unit_alone(ctx, systemd):
    systemd.add("app.service")
    result = reconcile(specset(svc(reconcile="observe-only")), ctx, builtin_kinds(), {}, "c1")
    rec = result.records["Service/app"]
    assert ready(rec) == (False, "DriftDetected")
    drifted = condition(rec, "Drifted")
    assert drifted["status"] == "True"
    assert "would start: app.service is inactive (dead)" in drifted["message"]
    assert systemd.acted() == []
    assert "observedGeneration" not in rec.status


def test_start_failure_retries_with_backoff(ctx, systemd, clock):
    systemd.add("app.service", fails=True)
    kinds = builtin_kinds()
    first = reconcile(specset(svc()), ctx, kinds, {}, "c1")
    rec = first.records["Service/app"]
    assert ready(rec) == (False, "StartFailed")
    assert "control process exited" in rec.status["conditions"][0]["message"]
    assert rec.status["retryAfterSeconds"] == 30
    clock.advance(10)  # a pass before the retry time does not touch the unit
    skipped = reconcile(specset(svc()), ctx, kinds, first.records, "c1")
    assert systemd.acted() == ["start app.service"]
    assert ctx.next_wakeup() == first.records["Service/app"].backoff.not_before
    clock.advance(20)
    second = reconcile(specset(svc()), ctx, kinds, skipped.records, "c1")
    assert second.records["Service/app"].status["retryAfterSeconds"] == 60
    assert systemd.acted() == ["start app.service", "start app.service"]


def test_unknown_unit_and_missing_systemctl(ctx, systemd, monkeypatch):
    result = reconcile(specset(svc()), ctx, builtin_kinds(), {}, "c1")
    assert ready(result.records["Service/app"]) == (False, "UnitNotFound")
    monkeypatch.setenv("PATH", "/nonexistent")
    result = reconcile(specset(svc(name="other")), ctx, builtin_kinds(), {}, "c1")
    assert ready(result.records["Service/other"]) == (False, "SystemctlNotFound")


def test_prune_stops_the_unit(ctx, systemd):
    systemd.add("app.service")
    first = reconcile(specset(svc(enabled=True)), ctx, builtin_kinds(), {}, "c1")
    result = reconcile(specset(), ctx, builtin_kinds(), first.records, "c2")
    assert result.pruned == ["Service/app"]
    assert systemd.acted()[-1] == "stop app.service"
    assert systemd.units()["app.service"]["active"] == "inactive"
    assert systemd.units()["app.service"]["enabled"] == "enabled"  # enablement left alone


@pytest.mark.parametrize("unit", ["app", "-x.service", "../x.service", "a b.service",
                                  "a\\\\b.service"])
def test_unit_name_schema(ctx, systemd, unit):
    result = reconcile(specset(svc(unit=unit)), ctx, builtin_kinds(), {}, "c1")
    assert ready(result.records["Service/app"]) == (False, "InvalidSpec")
    assert systemd.calls() == []


def test_plan_only_reads(ctx, systemd):
    systemd.add("app.service", enabled="enabled")
    kind = builtin_kinds()["Service"]
    spec = kind.validate({"unit": "app.service", "state": "running", "enabled": False})
    assert kind.plan("Service/app", spec, ctx) == (
        "would start: app.service is inactive (dead), spec says running; "
        "would disable: app.service is enabled, spec says disabled")
    assert systemd.acted() == []


# -- the device's [services] allowlist -------------------------------------------------

def test_a_unit_off_the_allowlist_is_never_touched(ctx, systemd):
    systemd.add("db.service")
    result = reconcile(specset(svc(unit="db.service")), ctx, builtin_kinds(), {}, "c1")
    assert ready(result.records["Service/app"]) == (False, "ServiceNotAllowed")
    assert systemd.calls() == []


def test_allowlist_globs(ctx, systemd):
    ctx.services = Services(allowed=("kiosk-*.service",))
    systemd.add("kiosk-web.service")
    result = reconcile(specset(svc(unit="kiosk-web.service")), ctx, builtin_kinds(), {}, "c1")
    assert ready(result.records["Service/app"]) == (True, "Running")
    assert systemd.acted() == ["start kiosk-web.service"]


@pytest.mark.parametrize("unit", ["poweroff.target", "ssh.service", "sshd.service",
                                  "giter-agent.service", "systemd-networkd.service",
                                  "getty@tty1.service", "dbus.service",
                                  "networking.service"])
def test_critical_units_are_refused_even_when_allowed(ctx, systemd, unit):
    ctx.services = Services(allowed=("*",))
    systemd.add(unit, active="active", sub="running")
    result = reconcile(specset(svc(unit=unit, state="stopped")), ctx, builtin_kinds(), {}, "c1")
    assert ready(result.records["Service/app"]) == (False, "CriticalService")
    assert systemd.calls() == []


def test_a_critical_unit_named_in_force_is_acted_on(ctx, systemd):
    ctx.services = Services(allowed=("*",), force=("ssh.service",))
    systemd.add("ssh.service")
    result = reconcile(specset(svc(unit="ssh.service")), ctx, builtin_kinds(), {}, "c1")
    assert ready(result.records["Service/app"]) == (True, "Running")


def test_prune_leaves_a_unit_the_device_no_longer_allows(ctx, systemd):
    systemd.add("app.service")
    first = reconcile(specset(svc()), ctx, builtin_kinds(), {}, "c1")
    assert ready(first.records["Service/app"]) == (True, "Running")
    ctx.services = Services(allowed=())
    reconcile(specset(), ctx, builtin_kinds(), first.records, "c2")
    assert systemd.acted() == ["start app.service"]
    assert systemd.units()["app.service"]["active"] == "active"
