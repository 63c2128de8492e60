"""Exit codes and output formats a script can rely on, without parsing text.

``giter-agent status`` exits with the device's state (0 only when in sync);
``giter-agent plan --detailed-exitcode`` says whether anything would change; ``-o
json|yaml`` is offered where kubectl users look for it, and ``--json`` keeps working.
"""

from __future__ import annotations

import json

import yaml
from support.devices import SimDevice, motd
from support.fleet import Fleet, capture
from support.kinds import Rig, doc

from giter_agent.cli.commands.status import EXIT_CODES
from giter_agent.cli.main import main
from giter_agent.state.health import STATES
from giter_bundle.cli import main as bundle_main


def status(device: SimDevice, capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["-c", str(device.config_path), "status", *args])
    return code, capsys.readouterr().out


def test_every_state_has_its_own_exit_code_and_only_in_sync_is_zero():
    assert set(EXIT_CODES) == set(STATES)
    failing = {state: code for state, code in EXIT_CODES.items()
               if state not in ("in-sync", "syncing")}
    assert len(set(failing.values())) == len(failing) and 0 not in failing.values()
    assert 2 not in EXIT_CODES.values()  # 2 is a usage or configuration error


def test_status_exits_with_the_device_s_state(tmp_path, publisher, capsys):
    device = SimDevice(tmp_path, "pi-01", publisher.allowed_signers)
    code, out = status(device, capsys)
    assert code == 4 and "state         offline (NoSpec" in out  # nothing applied yet
    stick = tmp_path / "stick"
    (stick / "giter" / "inbox").mkdir(parents=True)
    good = publisher.commit("spec", files={"devices/pi-01/motd.yaml":
                                           motd(device.root, "hello\n")})
    publisher.bundle(stick / "giter/inbox/fleet.bundle")
    assert main(["-c", str(device.config_path), "sync", "--usb", str(stick)]) == 0
    code, as_json = status(device, capsys, "--json")
    assert code == 0
    code, as_yaml = status(device, capsys, "-o", "yaml")
    assert code == 0
    assert yaml.safe_load(as_yaml) == json.loads(as_json)
    assert json.loads(as_json)["health"]["state"] == "in-sync"
    code, again = status(device, capsys, "-o", "json")
    assert code == 0 and json.loads(again) == json.loads(as_json)

    publisher.commit("unsigned", sign=False, files={"devices/pi-01/motd.yaml":
                                                    motd(device.root, "evil\n")})
    (stick / "giter/inbox/fleet.bundle").unlink()
    publisher.bundle(stick / "giter/inbox/evil.bundle", f"{good}..main")
    assert main(["-c", str(device.config_path), "sync", "--usb", str(stick)]) == 1
    code, _ = status(device, capsys)
    assert code == 1
    code, line = status(device, capsys, "--line")
    assert code == 1 and line.startswith("giter-agent pi-01: refused")


def test_plan_detailed_exitcode_says_whether_anything_would_change(tmp_path, publisher,
                                                                    capsys):
    rig = Rig(tmp_path, publisher)
    rig.publish({"motd.yaml": doc("File", "motd", {"path": str(rig.root / "motd"),
                                                   "content": "hi\n"})})
    assert rig.cli("sync", "--bundle", rig.bundle()) == 0
    assert rig.cli("plan", "--detailed-exitcode") == 0
    (rig.root / "motd").write_text("edited on the device\n")
    assert rig.cli("plan") == 0  # the default stays 0 for scripts written before
    assert rig.cli("plan", "--detailed-exitcode") == 3
    capsys.readouterr()
    assert rig.cli("plan", "-o", "yaml", "--detailed-exitcode") == 3
    steps = yaml.safe_load(capsys.readouterr().out)["steps"]
    assert [(s["key"], s["action"]) for s in steps] == [("File/motd", "change")]


def test_plan_detailed_exitcode_fails_on_an_invalid_resource(tmp_path, publisher):
    rig = Rig(tmp_path, publisher)
    rig.publish({"motd.yaml": doc("File", "motd", {"path": str(rig.root / "motd"),
                                                   "content": "hi\n"}),
                 "pot.yaml": doc("Teapot", "t", {})})
    rig.cli("sync", "--bundle", rig.bundle())
    assert rig.cli("plan", "--detailed-exitcode") == 1


def test_giter_bundle_status_and_inspect_speak_yaml(tmp_path, publisher_key):
    fleet = Fleet(tmp_path, publisher_key)
    code, as_json = fleet.cli("status", "--json")
    assert code == 0
    code, as_yaml = fleet.cli("status", "-o", "yaml")
    assert code == 0 and yaml.safe_load(as_yaml) == json.loads(as_json)
    bundle = tmp_path / "b.bundle"
    assert fleet.cli("create", "--output", bundle)[0] == 0
    code, as_yaml = capture(bundle_main, ["-C", fleet.root, "inspect", bundle, "-o", "yaml"])
    assert code == 0, as_yaml
    code, as_json = capture(bundle_main, ["-C", fleet.root, "inspect", bundle, "--json"])
    assert yaml.safe_load(as_yaml) == json.loads(as_json)
    assert json.loads(as_json)["ok"] is True


def test_the_parser_wraps_help_as_argparse_would_without_loading_shutil():
    """argparse's own formatter imports ``shutil`` (with bz2, lzma) for the width, which
    would stay in ``giter-agent run``: ``core.clikit.Formatter`` finds it with ``os``."""
    import os
    import subprocess
    import sys

    code = ("import argparse, json, sys\n"
            "from giter_agent.cli.main import _parser\n"
            "p = _parser()\n"
            "p.parse_args(['-c', 'agent.toml', 'run'])\n"
            "loaded = 'shutil' in sys.modules or 'lzma' in sys.modules\n"
            "ours = p.format_help()\n"
            "p.formatter_class = argparse.HelpFormatter\n"
            "print(json.dumps([loaded, ours, p.format_help()]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "50"}, check=False)
    assert done.returncode == 0, done.stderr
    loaded, ours, argparses = json.loads(done.stdout)
    assert loaded is False
    assert ours == argparses
    assert max(len(line) for line in ours.splitlines()) <= 50  # COLUMNS, not 80
