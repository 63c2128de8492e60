"""Resource documents: the strict YAML loader and selection from device and group folders."""

from __future__ import annotations

import pytest

from giter_agent.core.errors import ResourceError
from giter_agent.spec.resources import load_yaml, parse_resource, select

DOC = b"""\
apiVersion: giter.dev/v1alpha1
kind: File
metadata:
  name: motd
  generation: 3
spec:
  path: /srv/motd
  content: hi
"""


@pytest.mark.parametrize("data, reason", [
    (b"a: &x [1]\nb: *x\n", "YAMLAliasRefused"),
    (b"a: 1\nb: 2\na: 3\n", "YAMLDuplicateKey"),
    (b"a:\n" + b"".join(b"  " * i + b"- \n" for i in range(1, 40)), "YAMLTooDeep"),
    (b"[" * 64 + b"]" * 64, "YAMLTooDeep"),
    (b"a: 1\n" + b"#" * 300_000, "DocumentTooLarge"),
    (b"\xff\xfe", "InvalidYAML"),
    (b"a: [\n", "InvalidYAML"),
    (b"a: 1\n---\nb: 2\n", "InvalidYAML"),
    (b"a: !!python/object:os.system x\n", "InvalidYAML"),
])
def test_loader_refuses(data, reason):
    with pytest.raises(ResourceError) as err:
        load_yaml(data)
    assert err.value.reason == reason


def test_parse_resource_fields():
    res = parse_resource("devices/d/motd.yaml", DOC)
    assert (res.kind, res.name, res.generation, res.key) == ("File", "motd", 3, "File/motd")
    assert res.spec == {"path": "/srv/motd", "content": "hi"}
    assert res.warnings == ()


@pytest.mark.parametrize("change, reason", [
    ((b"giter.dev/v1alpha1", b"v1"), "UnsupportedAPIVersion"),
    ((b"name: motd", b"name: Motd"), "InvalidResource"),
    ((b"generation: 3", b"generation: -1"), "InvalidResource"),
    ((b"spec:", b"specs:"), "InvalidResource"),
    ((b"kind: File", b"kind: 7"), "InvalidResource"),
])
def test_parse_resource_refuses(change, reason):
    with pytest.raises(ResourceError) as err:
        parse_resource("p.yaml", DOC.replace(*change))
    assert err.value.reason == reason


def test_status_on_spec_branch_is_ignored_with_a_warning():
    res = parse_resource("p.yaml", DOC + b"status:\n  fake: true\n")
    assert "status" not in res.spec
    assert res.warnings and "ignored" in res.warnings[0]


def test_select_device_overrides_group_and_bad_files_fail_alone():
    other = DOC.replace(b"/srv/motd", b"/srv/other")
    files = [
        ("devices/d/motd.yaml", DOC),
        ("devices/d/broken.yaml", b"a: [\n"),
        ("devices/d/notes.txt", b"not a resource"),
        ("groups/g1/motd.yaml", other),
        ("groups/g1/beacon.yaml", DOC.replace(b"name: motd", b"name: beacon")),
        ("groups/g2/beacon.yaml", DOC.replace(b"name: motd", b"name: beacon")),
    ]
    got = select(files)
    assert [r.path for r in got.resources] == ["devices/d/motd.yaml", "groups/g1/beacon.yaml"]
    assert {(i.path, i.reason) for i in got.invalid} == {
        ("devices/d/broken.yaml", "InvalidYAML"),
        ("groups/g2/beacon.yaml", "DuplicateResource"),
    }


def test_yaml_12_booleans_only():
    assert load_yaml(b"a: on\nb: off\nc: yes\nd: no\ne: true\nf: False\n") == {
        "a": "on", "b": "off", "c": "yes", "d": "no", "e": True, "f": False}
