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


def _with_loader(loader: type, data: bytes) -> object:
    """``load_yaml(data)`` with ``loader``: the value, or the refusal's reason."""
    import giter_agent.core.yaml_policy as resources

    saved = resources._LOADER
    resources._LOADER = loader
    try:
        return load_yaml(data)
    except ResourceError as exc:
        return exc.reason
    finally:
        resources._LOADER = saved


def test_libyaml_and_pure_python_loaders_read_the_same():
    """The C event parser (speed) and the pure-Python one (boards without libyaml) agree.

    Every resource and status file the suite and the examples use, and the refusals.
    """
    from pathlib import Path

    from giter_agent.core.yaml_policy import _loader_class

    c_loader, py_loader = _loader_class(True), _loader_class(False)
    assert "CParser" in {k.__name__ for k in c_loader.__mro__}  # libyaml is really in use
    assert "CParser" not in {k.__name__ for k in py_loader.__mro__}
    root = Path(__file__).resolve().parent.parent
    corpus = [p.read_bytes() for p in sorted(root.rglob("*.yaml"))
              if ".venv" not in p.parts and p.stat().st_size < 65536]
    corpus += [DOC, b"a: &x [1]\nb: *x\n", b"a: 1\nb: 2\na: 3\n", b"[" * 64 + b"]" * 64,
               b"a: [\n", b"a: 1\n---\nb: 2\n", b"", b"\ta: 1\n", b"a: on\nb: 0x1f\nc: 1e3\n",
               b"k: !!binary aGk=\n", b"? [1, 2]\n: x\n", "ü: \"\\u00fc\"\n".encode(),
               b"a: |\n  two\n  lines\n", b"a: 2026-12-04\nb: 12:30:00\n", b"- ~\n- null\n"]
    for data in corpus:
        assert _with_loader(c_loader, data) == _with_loader(py_loader, data), data[:80]
