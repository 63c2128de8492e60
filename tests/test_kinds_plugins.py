"""Plug-in kinds from entry points: a real installed distribution on sys.path.

The test writes a package and its ``.dist-info`` (METADATA + entry_points.txt), as
pip would install it, so ``importlib.metadata`` finds it the way it finds any plug-in.
"""

from __future__ import annotations

import logging
import sys
import textwrap

import pytest
from gpiozero.pins.mock import MockFactory
from support.kinds import doc, make_ctx, ready, specset

from giter_agent.config.agent_toml import from_dict
from giter_agent.kinds import load_kinds
from giter_agent.reconcile.engine import reconcile

LAMP = '''
"""A plug-in kind, written as docs/kinds.md says."""
from giter_agent.kinds.base import Done, Failed, Kind, check_fields
from giter_agent.core.errors import ResourceError


class LampKind(Kind):
    kind = "Lamp"

    def validate(self, spec):
        check_fields(spec, {"colour"}, set())
        if spec["colour"] not in ("red", "green"):
            raise ResourceError("spec.colour must be red or green", reason="InvalidSpec")
        return dict(spec)

    def apply(self, key, spec, ctx):
        ctx.settings.setdefault("lamps", []).append(spec["colour"])
        return Done("Lit", f"lamp is {spec['colour']}", {"colour": spec["colour"]})


not_a_kind = object()
'''

ENTRY_POINTS = """
[giter_agent.kinds]
Lamp = acme_lamp:LampKind
Fragile = acme_fragile:FragileKind
Odd = acme_lamp:not_a_kind
Mismatch = acme_lamp:LampKind
File = acme_lamp:LampKind
"""


@pytest.fixture
def installed(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "acme_lamp.py").write_text(textwrap.dedent(LAMP))
    (site / "acme_fragile.py").write_text("import acme_missing_dependency\n")
    info = site / "acme_lamp-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-lamp\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name in ("acme_lamp", "acme_fragile"):
        sys.modules.pop(name, None)


def test_plugin_kinds_load_and_broken_ones_fail_alone(installed, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="giter.kinds.plugins"):
        kinds = load_kinds()
    assert kinds["Lamp"].kind == "Lamp"
    assert type(kinds["File"]).__module__ == "giter_agent.kinds.file"  # a built-in is not replaced
    logged = caplog.text
    assert "acme_missing_dependency" in logged and "Fragile" in logged
    assert "File = acme_lamp:LampKind ignored" in logged
    assert "not a giter_agent Kind" in logged and "named 'Mismatch'" in logged

    ctx = make_ctx(tmp_path, MockFactory())
    result = reconcile(specset(
        doc("Lamp", "porch", {"colour": "green"}),
        doc("Lamp", "bad", {"colour": "blue"}),
        doc("Fragile", "f", {}),
        doc("Odd", "o", {}),
        doc("File", "motd", {"path": str(tmp_path / "root" / "motd"), "content": "hi"}),
    ), ctx, kinds, {}, "c1")
    records = result.records
    assert ready(records["Lamp/porch"]) == (True, "Lit")
    assert records["Lamp/porch"].status["observed"] == {"colour": "green"}
    assert ready(records["Lamp/bad"]) == (False, "InvalidSpec")
    fragile = records["Fragile/f"].status["conditions"][0]
    assert (fragile["reason"], fragile["status"]) == ("PluginFailed", "False")
    assert "No module named 'acme_missing_dependency'" in fragile["message"]
    assert ready(records["Odd/o"]) == (False, "PluginFailed")
    assert ready(records["File/motd"]) == (True, "Applied")


def test_the_agent_loads_plugins_at_start(installed, tmp_path):
    from giter_agent.sync.agent import Agent

    config = from_dict({"device_id": "pi-1", "state_dir": "state", "board": "generic-mock",
                        "allowed_signers": "signers"}, base=tmp_path)
    agent = Agent(config)
    try:
        assert "Lamp" in agent.kinds and "Sensor" in agent.kinds
    finally:
        agent.close()


def test_injected_entry_points():
    """load_kinds takes the entry points as a dependency; no plug-ins, just built-ins."""
    assert sorted(load_kinds(entry_points=[])) == ["Agent", "AgentUpdate", "Command", "File",
                                                   "MaintenanceWindow", "Output",
                                                   "Package", "Release", "Secret", "Sensor",
                                                   "Service"]



def test_a_kind_declaring_a_field_of_an_unknown_type_is_refused_when_its_class_is_made():
    from giter_agent.kinds.base import COMMON_FIELDS, Kind
    from giter_agent.kinds.fields import Field, check_types

    # Fields are plain values, made as a plug-in may make them (in a loop, from a table);
    # the declaration is checked once, when a kind's class takes them, nested ones too.
    typo = Field("colour", "strnig", "lamp colour")
    nested = Field("lamps", "array", "lamps", items=Field("lamp", "object", "one lamp",
                                                          properties=(typo,)))
    for fields, named in (((typo,), "colour"), ((Field("on", "boolean", "on"), nested),
                                                "colour")):
        with pytest.raises(ValueError, match=f"field {named}: unknown type 'strnig'"):
            type("LampKind", (Kind,), {"kind": "Lamp", "FIELDS": fields})
    ok = type("LampKind", (Kind,), {"kind": "Lamp", "FIELDS": (Field("on", "boolean", "on"),)})
    assert ok.FIELDS is not None
    check_types(COMMON_FIELDS)  # the fields every kind shares are not a kind's: checked here
