"""The rules of fleet targeting, table-driven: selectors (Kubernetes semantics), the
placeholder language, and precedence between device, selector and group resources."""

from __future__ import annotations

import pytest

from giter_agent.core.errors import ResourceError
from giter_agent.spec.enrolment import DeviceRecord, parse_device_record
from giter_agent.spec.placeholders import Scope, render
from giter_agent.spec.resources import select
from giter_agent.spec.selectors import parse_selector

LABELS = {"site": "north", "hw": "pi4"}


@pytest.mark.parametrize(("selector", "matches"), [
    ({}, True),
    ({"matchLabels": {"site": "north"}}, True),
    ({"matchLabels": {"site": "north", "hw": "pi5"}}, False),
    ({"matchExpressions": [{"key": "hw", "operator": "In", "values": ["pi4", "pi5"]}]}, True),
    ({"matchExpressions": [{"key": "hw", "operator": "NotIn", "values": ["pi4"]}]}, False),
    ({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}, True),
    ({"matchExpressions": [{"key": "site", "operator": "Exists"}]}, True),
    ({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}, False),
    ({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}, True),
    ({"matchLabels": {"site": "north"},
      "matchExpressions": [{"key": "site", "operator": "DoesNotExist"}]}, False),
])
def test_selector_semantics(selector, matches):
    assert parse_selector(selector, "metadata").matches(LABELS) is matches


@pytest.mark.parametrize("selector", [
    [], {"labels": {"a": "b"}}, {"matchLabels": {"Site": "north"}},
    {"matchLabels": {"site": ""}}, {"matchExpressions": [{"key": "a", "operator": "Is"}]},
    {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
    {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
    {"matchExpressions": {"key": "a"}},
])
def test_a_bad_selector_is_refused_typed(selector):
    with pytest.raises(ResourceError) as err:
        parse_selector(selector, "metadata")
    assert err.value.reason == "InvalidSelector"


SCOPE = Scope("pi-a", {"site": "north"}, {"pin": 17, "on": True, "name": "lobby"},
              ambiguous={"zone": "two label files disagree"})


@pytest.mark.parametrize(("text", "want"), [
    ("${device.id}", "pi-a"),
    ("${values.pin}", 17),  # a lone placeholder keeps the value's type
    ("${values.on}", True),
    ("gpio${values.pin}-${values.on}", "gpio17-true"),
    ("${labels.site}/${values.name}", "north/lobby"),
    ("$${values.pin} costs $$5", "${values.pin} costs $$5"),  # $${ escapes; $$ alone is text
    ("echo ${HOME} ${MAINPID} $PATH", "echo ${HOME} ${MAINPID} $PATH"),  # not ours: as is
    ("no placeholder", "no placeholder"),
])
def test_placeholders_render(text, want):
    assert render({"a": [text]}, SCOPE) == {"a": [want]}


@pytest.mark.parametrize(("text", "reason"), [
    ("${values.missing}", "MissingValue"),
    ("${labels.hw}", "MissingValue"),
    ("${values.zone}", "AmbiguousValue"),
    ("${device.name}", "InvalidPlaceholder"),
    ("${values.pin", "InvalidPlaceholder"),
    ("${values.}", "InvalidPlaceholder"),
])
def test_a_placeholder_without_a_value_is_refused_never_empty(text, reason):
    with pytest.raises(ResourceError) as err:
        render({"content": f"x {text} y"}, SCOPE)
    assert err.value.reason == reason


def doc(name: str, selector: str = "") -> bytes:
    return (f"apiVersion: giter.dev/v1alpha1\nkind: File\nmetadata:\n  name: {name}\n"
            f"{selector}spec: {{path: /x}}\n").encode()


NORTH = "  selector: {matchLabels: {site: north}}\n"
PI4 = "  selector: {matchLabels: {hw: pi4}}\n"


def test_precedence_device_over_selector_over_group():
    files = [("devices/pi-a/m.yaml", doc("m")), ("fleet/m.yaml", doc("m", NORTH)),
             ("fleet/f.yaml", doc("f", NORTH)),
             ("fleet/other.yaml", doc("o", "  selector: {matchLabels: {site: south}}\n")),
             ("groups/g/m.yaml", doc("m")), ("groups/g/f.yaml", doc("f"))]
    out = select(files, LABELS)
    assert not out.invalid
    by_key = {r.key: r for r in out.resources}
    assert set(by_key) == {"File/m", "File/f"}  # File/o's selector does not match
    assert by_key["File/m"].path == "devices/pi-a/m.yaml"
    assert by_key["File/m"].overrides == ("fleet/m.yaml", "groups/g/m.yaml")
    assert by_key["File/f"].selector == "site=north"
    assert by_key["File/f"].overrides == ("groups/g/f.yaml",)


def test_two_matching_selectors_refuse_the_resource():
    files = [("fleet/a.yaml", doc("m", NORTH)), ("fleet/b.yaml", doc("m", PI4)),
             ("groups/g/m.yaml", doc("m"))]
    out = select(files, LABELS)
    assert out.resources == []
    (bad,) = out.invalid
    assert (bad.reason, bad.key) == ("AmbiguousResource", "File/m")
    # Only one matches another device: no ambiguity there.
    assert [r.path for r in select(files, {"site": "north"}).resources] == ["fleet/a.yaml"]


def test_a_selector_outside_fleet_or_none_inside_is_refused():
    out = select([("devices/pi-a/m.yaml", doc("m", NORTH)), ("fleet/n.yaml", doc("n"))],
                 LABELS)
    assert [b.reason for b in out.invalid] == ["InvalidSelector", "InvalidSelector"]


def test_device_record_round_trips_and_refuses_bad_labels():
    record = DeviceRecord("pi-a", ("lobby",), {"site": "north"})
    assert parse_device_record("pi-a", record.document(), "x") == record
    old = DeviceRecord("pi-a", ("lobby",)).document()
    assert b"labels" not in old  # an enrolment without labels reads as it always did
    with pytest.raises(ResourceError) as err:
        parse_device_record("pi-a", record.document().replace(b"north", b"North!"), "x")
    assert err.value.reason == "InvalidEnrolment"


# -- rollouts ------------------------------------------------------------------------------

def rollout_doc(**spec) -> bytes:
    import yaml

    base = {"baseline": "a" * 40, "resources": ["fleet/m.yaml"],
            "waves": [{"name": "canary", "selector": {"matchLabels": {"ring": "canary"}}},
                      {"name": "half", "percent": 50}, {"name": "all", "percent": 100}],
            "openWaves": 1}
    base.update(spec)
    return yaml.safe_dump({"apiVersion": "giter.dev/v1alpha1", "kind": "Rollout",
                           "metadata": {"name": "r"}, "spec": base}).encode()


def test_waves_by_label_then_stable_hash():
    from giter_agent.spec.rollouts import bucket, parse_rollout

    r = parse_rollout("rollouts/r.yaml", rollout_doc())
    assert r.wave_of("pi-a", {"ring": "canary"}) == 0
    ids = [f"pi-{i}" for i in range(1000)]
    halves = [i for i in ids if r.wave_of(i, {}) == 1]
    assert 400 < len(halves) < 600  # about half, by sha256 of name and id
    assert all(bucket("r", i) < 50 for i in halves)
    assert {r.wave_of(i, {}) for i in ids} == {1, 2}
    # Fixed by the rollout's name and the id: another rollout splits the fleet anew.
    assert [bucket("other", i) for i in ids[:50]] != [bucket("r", i) for i in ids[:50]]
    assert r.holds("pi-a", {"ring": "canary"}) is None
    assert r.holds(halves[0], {}) == "rollout r: wave half not open"
    aborted = parse_rollout("rollouts/r.yaml", rollout_doc(aborted=True))
    assert aborted.holds("pi-a", {"ring": "canary"}) == "rollout r aborted"
    assert r.time_limit is None
    assert parse_rollout("rollouts/r.yaml", rollout_doc(timeLimit="1h30m")).time_limit == 5400


@pytest.mark.parametrize("spec", [
    {"baseline": "HEAD"}, {"resources": []}, {"waves": []},
    {"waves": [{"name": "x"}]}, {"waves": [{"name": "x", "percent": 0}]},
    {"openWaves": 4}, {"readyPercent": 101}, {"paused": "no"}, {"surprise": 1},
    {"timeLimit": "soon"}, {"timeLimit": "0s"}, {"timeLimit": 3600},
])
def test_a_bad_rollout_is_refused_typed(spec):
    from giter_agent.spec.rollouts import parse_rollout

    with pytest.raises(ResourceError) as err:
        parse_rollout("rollouts/r.yaml", rollout_doc(**spec))
    assert err.value.reason == "InvalidRollout"


def memory_tree(files: dict[str, bytes]):
    from dulwich.index import commit_tree
    from dulwich.object_store import MemoryObjectStore
    from dulwich.objects import Blob

    store = MemoryObjectStore()
    entries = []
    for path, data in sorted(files.items()):
        blob = Blob.from_string(data)
        store.add_object(blob)
        entries.append((path.encode(), blob.id, 0o100644))
    return store, commit_tree(store, entries)


def test_a_device_refuses_a_spec_whose_rollout_it_cannot_follow():
    from giter_agent.core.errors import TreeError
    from giter_agent.spec.targeting import target

    files = {"fleet/m.yaml": doc("m", "  selector: {}\n")}
    store, tree = memory_tree(files)
    assert [r.key for r in target(store, tree, "pi-a", ()).specset.resources] == ["File/m"]
    for rollout, reason in ((rollout_doc(), "RolloutBaselineUnknown"),
                            (rollout_doc(openWaves="all"), "InvalidRollout")):
        store, tree = memory_tree({**files, "rollouts/r.yaml": rollout})
        with pytest.raises(TreeError) as err:
            target(store, tree, "pi-a", ())
        assert err.value.reason == reason
