"""Pruning: what leaves the spec is undone - unless kept, observe-only, or only broken."""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin
from support.kinds import doc, make_ctx

from giter_agent.kinds import builtin_kinds
from giter_agent.reconcile.engine import reconcile
from giter_agent.spec.resources import select


@pytest.fixture
def factory():
    f = MockFactory(pin_class=MockPWMPin)
    yield f
    f.close()


@pytest.fixture
def ctx(tmp_path, factory):
    c = make_ctx(tmp_path, factory)
    yield c
    c.close()


def file_doc(name: str, root, **extra) -> bytes:
    return doc("File", name, {"path": str(root / name), "content": "x", **extra})


def test_every_kind_of_effect_is_undone(ctx, factory, tmp_path):
    root = tmp_path / "root"
    (ctx.sysfs / "class/thermal/thermal_zone0").mkdir(parents=True)
    (ctx.sysfs / "class/thermal/thermal_zone0/temp").write_text("40000\n")
    ctx.settings_config = ctx.settings_config.__class__(report_interval_min=10)
    kinds = builtin_kinds()
    first = reconcile(select([
        ("devices/d/f.yaml", file_doc("f", root)),
        ("devices/d/o.yaml", doc("Output", "o", {"pin": "led2", "state": "pwm", "value": 0.5})),
        ("devices/d/s.yaml", doc("Sensor", "s", {"source": "cpu-temperature"})),
        ("devices/d/a.yaml", doc("Agent", "agent", {"reportInterval": 30})),
    ]), ctx, kinds, {}, "c1")
    assert all(r.status["conditions"][0]["status"] == "True" for r in first.records.values())
    assert ctx.settings and "Sensor/s" in ctx.devices
    result = reconcile(select([]), ctx, kinds, first.records, "c2")
    assert sorted(result.pruned) == ["Agent/agent", "File/f", "Output/o", "Sensor/s"]
    assert not (root / "f").exists()
    assert factory.pin("GPIO18").state == 0
    assert ctx.devices == {} and ctx.settings == {}


def test_a_renamed_file_holding_another_resource_prunes_the_old_one(ctx, tmp_path):
    root = tmp_path / "root"
    kinds = builtin_kinds()
    first = reconcile(select([("devices/d/x.yaml", file_doc("one", root))]), ctx, kinds, {},
                      "c1")
    second = reconcile(select([("devices/d/x.yaml", file_doc("two", root))]), ctx, kinds,
                       first.records, "c2")
    assert second.pruned == ["File/one"]
    assert not (root / "one").exists() and (root / "two").exists()


def test_a_broken_file_keeps_its_last_good_spec_until_removed(ctx, tmp_path):
    root = tmp_path / "root"
    kinds = builtin_kinds()
    first = reconcile(select([("devices/d/x.yaml", file_doc("one", root))]), ctx, kinds, {},
                      "c1")
    broken = reconcile(select([("devices/d/x.yaml", b"kind: [\n")]), ctx, kinds,
                       first.records, "c2")
    assert broken.pruned == [] and (root / "one").exists()
    removed = reconcile(select([]), ctx, kinds, broken.records, "c3")
    assert removed.pruned == ["file/devices/d/x.yaml"]
    assert not (root / "one").exists()


def test_prune_false_keeps_the_effect(ctx, tmp_path):
    root = tmp_path / "root"
    kinds = builtin_kinds()
    first = reconcile(select([("devices/d/x.yaml", file_doc("keep", root, prune=False))]), ctx,
                      kinds, {}, "c1")
    result = reconcile(select([]), ctx, kinds, first.records, "c2")
    assert result.pruned == [] and (root / "keep").exists()


def test_a_file_broken_for_many_passes_still_keeps_and_later_prunes(ctx, tmp_path):
    root = tmp_path / "root"
    kinds = builtin_kinds()
    records = reconcile(select([("devices/d/x.yaml", file_doc("one", root))]), ctx, kinds, {},
                        "c1").records
    for _ in range(3):  # timer passes over the same broken spec
        result = reconcile(select([("devices/d/x.yaml", b"kind: [\n")]), ctx, kinds, records,
                           "c2")
        records = result.records
        message = records["file/devices/d/x.yaml"].status["conditions"][0]["message"]
        assert message.endswith("the last valid spec stays applied")
        assert result.pruned == []
    assert reconcile(select([]), ctx, kinds, records, "c3").pruned == ["file/devices/d/x.yaml"]
    assert not (root / "one").exists()


def test_a_duplicate_in_a_second_group_does_not_hide_the_first(ctx, tmp_path):
    data = file_doc("motd", tmp_path / "root")
    result = reconcile(select([("groups/a/m.yaml", data), ("groups/b/m.yaml", data)]), ctx,
                       builtin_kinds(), {}, "c1")
    applied = result.records["File/motd"]
    assert applied.path == "groups/a/m.yaml" and not applied.invalid
    assert applied.status["conditions"][0]["status"] == "True"
    dup = result.records["file/groups/b/m.yaml"].status["conditions"][0]
    assert dup["reason"] == "DuplicateResource"
    assert result.not_ready == ["file/groups/b/m.yaml"]
