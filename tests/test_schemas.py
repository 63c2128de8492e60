"""The resource JSON Schemas: generated from the kinds' declarations, shipped, agreeing.

The schemas in the package are what the generator makes now; every YAML resource example
in docs/ passes both the schema and the device's own parser and ``validate``; and over
mutations of each declared field, the schema never refuses what a device accepts and
refuses every value the field's declaration rules out.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml
from support.fleet import Fleet

from giter_agent.core.errors import GiterError
from giter_agent.kinds import builtin_kinds
from giter_agent.kinds.base import COMMON_FIELDS
from giter_agent.kinds.schema import RESOURCE_FILE, builtin_schema_files, shipped
from giter_agent.spec.resources import parse_resource

# jsonschema is a host-only test dependency (pyproject's `host` extra): the emulated
# boards install `test` alone, and this module is not an architecture test.
jsonschema = pytest.importorskip("jsonschema")

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"```yaml\n(.*?)```", re.DOTALL)


def examples() -> list[tuple[str, str]]:
    """(where, text) of every YAML block in docs/*.md that is a giter resource."""
    out = []
    for md in sorted(DOCS.glob("*.md")):
        for i, block in enumerate(BLOCK.findall(md.read_text())):
            if "apiVersion: giter.dev/" in block:
                for j, doc in enumerate(block.split("\n---\n")):
                    # a shape with "..." in place of fields is a template, not an example
                    if "apiVersion: giter.dev/" in doc and not re.search(r"^\s*\.\.\.",
                                                                         doc, re.M):
                        out.append((f"{md.name}#{i}.{j}", doc))
    return out


# Documents of the exchange repository that are not resources (docs/fleet.md): each is
# read by its own parser, checked below.
NOT_RESOURCES = ("Device", "Rollout")
ALL_EXAMPLES = examples()
EXAMPLES = [(w, t) for w, t in ALL_EXAMPLES if yaml.safe_load(t)["kind"] not in NOT_RESOURCES]


@pytest.mark.parametrize(("where", "text"),
                         [(w, t) for w, t in ALL_EXAMPLES if (w, t) not in EXAMPLES])
def test_every_docs_device_and_rollout_example_parses(where, text):
    from giter_agent.spec.enrolment import parse_device_record
    from giter_agent.spec.rollouts import parse_rollout

    doc = yaml.safe_load(text)
    name = doc["metadata"]["name"]
    if doc["kind"] == "Device":
        assert parse_device_record(name, text.encode(), where).labels
    else:
        text = re.sub(r'baseline: "[0-9a-f]+\.\.\."', f'baseline: "{"ab" * 20}"', text)
        assert parse_rollout(f"rollouts/{name}.yaml", text.encode()).waves


def validator(name: str = RESOURCE_FILE) -> jsonschema.Draft202012Validator:
    schema = json.loads(builtin_schema_files()[name])
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_shipped_schemas_are_the_generated_ones():
    assert shipped() == builtin_schema_files(), \
        "run python -m giter_agent.kinds.schema and commit the result"
    kinds = builtin_kinds()
    assert set(builtin_schema_files()) == {f"{k.lower()}.json" for k in kinds} | {RESOURCE_FILE}


def test_the_docs_have_examples_of_every_kind():
    kinds = {yaml.safe_load(text)["kind"] for _, text in EXAMPLES}
    # a Secret's example shortens its age file with "...", so it is a template here
    assert kinds >= set(builtin_kinds()) - {"Agent", "Secret"} and len(EXAMPLES) >= 6


@pytest.mark.parametrize(("where", "text"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_every_docs_example_passes_the_schema_and_the_device(where, text):
    errors = sorted(validator().iter_errors(yaml.safe_load(text)), key=str)
    assert not errors, f"{where}: {errors[0].message}"
    res = parse_resource(f"groups/docs/{where}.yaml", text.encode())
    builtin_kinds()[res.kind].validate(dict(res.spec))


BASES = {kind: yaml.safe_load(text) for _, text in EXAMPLES
         for kind in [yaml.safe_load(text)["kind"]]}
BASES.setdefault("Agent", {"apiVersion": "giter.dev/v1alpha1", "kind": "Agent",
                           "metadata": {"name": "agent"},
                           "spec": {"reportInterval": 600}})


def _sealed() -> str:
    from giter_agent.core import age
    from giter_agent.trust import sshsig

    key = sshsig.public_key_of(sshsig.generate_ed25519())
    return age.armor(age.encrypt([key], b"psk"))


BASES.setdefault("Secret", {"apiVersion": "giter.dev/v1alpha1", "kind": "Secret",
                            "metadata": {"name": "wifi"},
                            "spec": {"path": "/srv/giter/wifi.psk", "ciphertext": _sealed()}})
CANDIDATES = ("x", "", "/abs", "0644", "9", "28-00000a", "app.service", -1, 0, 1, 2, 63, 64,
              0.001, 0.5, 3600, 3601, 86401, 1e10, True, False, None, [], ["a"], {},
              {"above": 1}, {"above": "hot"})


def _candidates(f) -> list:
    values = list(CANDIDATES) + list(f.enum or ())
    for bound in (f.minimum, f.maximum):
        if bound is not None:
            values += [bound, bound - 1, bound + 1]
    return values


@pytest.mark.parametrize("kind", sorted(builtin_kinds()))
def test_schema_and_device_agree_field_by_field(kind):
    impl = builtin_kinds()[kind]
    check = validator(f"{kind.lower()}.json")
    base = BASES[kind]
    fields = list(impl.FIELDS) + [c for c in COMMON_FIELDS]
    for f in fields:
        for candidate in _candidates(f):
            doc = copy.deepcopy(base)
            doc["spec"][f.name] = candidate
            try:
                impl.validate(dict(doc["spec"]))
                device_ok = True
            except GiterError:
                device_ok = False
            try:
                f.validate(candidate)
                declared_ok = True
            except GiterError:
                declared_ok = False
            schema_ok = check.is_valid(doc)
            what = f"{kind}.spec.{f.name} = {candidate!r}"
            assert schema_ok or not device_ok, f"schema refuses what the device takes: {what}"
            if not declared_ok:
                assert not schema_ok, f"schema takes what the declaration refuses: {what}"
                assert not device_ok, f"device takes what its declaration refuses: {what}"


def test_unknown_fields_are_refused_by_both(tmp_path):
    doc = copy.deepcopy(BASES["Output"])
    doc["spec"]["ontime"] = 1
    assert not validator().is_valid(doc)


def test_init_writes_the_schemas_and_lint_stays_clean(tmp_path, publisher_key):
    fleet = Fleet(tmp_path, publisher_key)
    folder = fleet.root / ".giter/schemas"
    written = {p.name: p.read_bytes() for p in folder.glob("*.json")}
    assert written == builtin_schema_files()
    readme = (folder / "README.md").read_text()
    assert "# yaml-language-server: $schema=../../.giter/schemas/resource.json" in readme
    # the modeline the README suggests works from a resource file's folder
    resource = fleet.root / "groups/lobby/led.yaml"
    resource.parent.mkdir(parents=True)
    resource.write_text("# yaml-language-server: $schema=../../.giter/schemas/resource.json\n"
                        "apiVersion: giter.dev/v1alpha1\nkind: Output\nmetadata: {name: led}\n"
                        "spec: {pin: led1, state: \"on\"}\n")
    target = (resource.parent / "../../.giter/schemas/resource.json").resolve()
    assert target.is_file()
    code, out = fleet.cli("lint")
    assert code == 0 and "0 error(s)" in out, out
    committed = fleet.git("ls-files", ".giter/schemas").stdout.decode().split()
    assert sorted(committed) == sorted(f".giter/schemas/{n}" for n in [*written, "README.md"])


def test_a_plug_in_kind_without_declared_fields_is_not_refused():
    from giter_agent.kinds.base import Kind
    from giter_agent.kinds.schema import schema_files

    class Lamp(Kind):
        kind = "Lamp"

    files = schema_files({**builtin_kinds(), "Lamp": Lamp()})
    assert "lamp.json" not in files
    check = jsonschema.Draft202012Validator(json.loads(files[RESOURCE_FILE]))
    assert check.is_valid({"apiVersion": "giter.dev/v1alpha1", "kind": "Lamp",
                           "metadata": {"name": "l"}, "spec": {"colour": "red"}})
    assert not check.is_valid({"apiVersion": "giter.dev/v1alpha1", "kind": "Teapot",
                               "metadata": {"name": "t"}, "spec": {}})
