"""Signed but hostile resource files: each fails alone, the rest of the spec applies.

A control character (NUL, ESC from a coloured MOTD, form feed) or an integer too long to
convert used to escape the YAML loader as ReaderError/ValueError: the sync crashed, every
later sync crashed the same way and the status still said in sync. The device and the
publisher's ``lint`` share the loader (``giter_agent.spec.resources.load_yaml``), so both are
checked here end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.devices import SimDevice
from support.fleet import Fleet, enrolled

from giter_agent.cli.main import main
from giter_agent.core.errors import ResourceError
from giter_agent.spec.resources import load_yaml

API = "apiVersion: giter.dev/v1alpha1\n"

HOSTILE = {
    "nul": "a\x00b",
    "esc": "\x1b[31mred\x1b[0m",
    "form-feed": "page\x0cbreak",
}


def file_doc(root: Path, name: str, content_yaml: str) -> str:
    return (f"{API}kind: File\nmetadata:\n  name: {name}\nspec:\n"
            f"  path: {root}/{name}\n  content: {content_yaml}\n")


def hostile_texts(root: Path) -> dict[str, str]:
    texts = {case: file_doc(root, "bad", text) for case, text in HOSTILE.items()}
    texts["int-5000-digits"] = file_doc(root, "bad", "x").replace(
        "spec:\n", "spec:\n  mode: " + "9" * 5000 + "\n")
    texts["hex-int-100000-digits"] = file_doc(root, "bad", "x").replace(
        "spec:\n", "spec:\n  mode: 0x" + "f" * 100_000 + "\n")
    return texts


@pytest.mark.parametrize("case", ["nul", "esc", "form-feed", "int-5000-digits",
                                  "hex-int-100000-digits"])
def test_a_hostile_resource_fails_alone_and_status_says_why(tmp_path, publisher, case, capsys):
    device = SimDevice(tmp_path, "d1", publisher.allowed_signers)
    root, config = device.root, device.config
    tip = publisher.commit("spec", files={
        "devices/d1/good.yaml": file_doc(root, "good", json.dumps("fine\n")),
        "devices/d1/bad.yaml": hostile_texts(root)[case],
    })
    bundle = publisher.bundle(tmp_path / "spec.bundle")
    for _ in range(2):  # the second sync (any later one) must not crash either
        capsys.readouterr()
        code = main(["-c", str(config), "sync", "--bundle", str(bundle)])
        out = capsys.readouterr()
        assert "Traceback" not in out.out + out.err
        assert code in (0, 3)
    state = device.state()
    assert state.applied == tip
    assert (root / "good").read_text() == "fine\n"
    assert not (root / "bad").exists()
    bad = [r for r in state.resources.values() if r.invalid]
    assert [r.path for r in bad] == ["devices/d1/bad.yaml"]
    condition = bad[0].status["conditions"][0]
    assert condition["reason"] == "InvalidYAML" and "\n" not in condition["message"]
    # `status` names it instead of saying everything is in sync.
    capsys.readouterr()
    main(["-c", str(config), "status"])
    shown = capsys.readouterr().out
    assert "devices/d1/bad.yaml" in shown and "InvalidYAML" in shown


@pytest.mark.parametrize("case", ["nul", "esc", "int-5000-digits", "hex-int-100000-digits"])
def test_lint_names_the_hostile_file(tmp_path, publisher_key, case):
    fleet = Fleet(tmp_path, publisher_key)
    enrolled(fleet, tmp_path, "pi-a")
    fleet.write("devices/pi-a/bad.yaml", hostile_texts(tmp_path)[case])
    code, out = fleet.cli("lint")
    assert code == 1, out
    assert "devices/pi-a/bad.yaml: InvalidYAML:" in out
    assert "Traceback" not in out


@pytest.mark.parametrize("text", [b"a: 0x" + b"f" * 17, b"a: -0x" + b"f" * 17,
                                  b"a: 0" + b"7" * 23, b"a: " + b"9" * 21])
def test_integers_are_held_to_64_bits(text):
    with pytest.raises(ResourceError) as err:
        load_yaml(text)
    assert err.value.reason == "InvalidYAML"
    assert load_yaml(b"a: 0xffffffffffffffff")["a"] == 2**64 - 1
