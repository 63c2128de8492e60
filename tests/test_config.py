"""Agent and board configuration: good files load, every bad key is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from giter_agent.config.agent_toml import load
from giter_agent.core.errors import ConfigError
from giter_agent.device.board import load_board, shipped_boards

GOOD = """\
device_id = "pi-01"
state_dir = "state"
board = "generic-mock"
allowed_signers = "allowed_signers"
groups = ["kitchen", "floor-2"]
[usb]
roots = ["/media/giter"]
[files]
roots = ["/srv/giter"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_good_config_resolves_relative_paths(tmp_path):
    cfg = load(write(tmp_path, GOOD))
    assert cfg.device_id == "pi-01"
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.allowed_signers == tmp_path / "allowed_signers"
    assert cfg.branch == "main" and cfg.branch_ref == b"refs/heads/main"
    assert cfg.status_ref == b"refs/heads/status/pi-01"
    assert cfg.groups == ("kitchen", "floor-2")
    assert cfg.usb_roots == (Path("/media/giter"),)
    assert cfg.files_roots == (Path("/srv/giter"),)
    assert cfg.services.allowed == () and cfg.services.force == ()  # no unit by default


def test_services_allowlist(tmp_path):
    cfg = load(write(tmp_path, GOOD + '[services]\nallowed = ["kiosk-*.service", '
                     '"ssh.service"]\nforce = ["ssh.service"]\n'))
    assert cfg.services.allowed == ("kiosk-*.service", "ssh.service")
    assert cfg.services.force == ("ssh.service",)


@pytest.mark.parametrize("text, key", [
    ("colour = 1\n" + GOOD, "colour"),
    (GOOD.replace("[files]", "[files]\nroot = []"), "files.root"),
    (GOOD.replace('device_id = "pi-01"\n', ""), "device_id"),
    (GOOD.replace('"pi-01"', '"Pi 01"'), "device_id"),
    (GOOD.replace('"pi-01"', "7"), "device_id"),
    (GOOD.replace('["kitchen", "floor-2"]', '"kitchen"'), "groups"),
    (GOOD.replace('["kitchen", "floor-2"]', '["kitchen", "kitchen"]'), "groups"),
    (GOOD.replace('roots = ["/srv/giter"]', 'roots = "/srv"'), "files.roots"),
    ('branch = "a..b"\n' + GOOD, "branch"),
    ("usb = 3\n" + GOOD.split("[usb]")[0], "usb"),
    (GOOD + "[limits]\nmax_commits = 0\n", "limits.max_commits"),
    (GOOD + "[limits]\nmax_bundle_mib = 1.5\n", "limits.max_bundle_mib"),
    (GOOD + "[limits]\nmax_blobs = 1\n", "limits.max_blobs"),
    # "~name" of a user the system lacks: Path.expanduser raised RuntimeError (found by
    # the config fuzz target, tests/fuzz/regressions/config-home-of-unknown-user.bin).
    ('state_dir = "~no-such-user-giter/state"\n' + GOOD.replace("state_dir", "#state_dir"),
     "state_dir"),
    (GOOD + '[services]\nallowed = "app.service"\n', "services.allowed"),
    (GOOD + '[services]\nallowed = ["a b.service"]\n', "services.allowed"),
    (GOOD + '[services]\nforce = ["ssh*"]\n', "services.force"),
    (GOOD + '[services]\nallow = []\n', "services.allow"),
])
def test_bad_config_names_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, text))
    assert f": {key}:" in str(err.value)
    assert str(tmp_path / "agent.toml") in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(write(tmp_path, "device_id = \n"))


def test_shipped_boards_load():
    names = shipped_boards()
    assert "generic-mock" in names
    for name in names:
        board = load_board(name)
        assert board.status_led is None or board.status_led in board.pins


@pytest.mark.parametrize("text, key", [
    ('name = "x"\npin_factory = "magic"\n', "pin_factory"),
    ('name = "x"\nwires = 1\n', "wires"),
    ('name = "x"\n[pins]\nled = "GPIO999x"\n', "pins.led"),
    ('name = "x"\n[pins]\nLED = "GPIO17"\n', "pins.LED"),
    ('name = "x"\nstatus_led = "led"\n', "status_led"),
    ('name = "x"\n[pins]\na = "GPIO17"\nb = "GPIO17"\n', "pins"),
    ('pin_factory = "mock"\n', "name"),
])
def test_board_errors_name_file_and_key(tmp_path, text, key):
    path = tmp_path / "board.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_board(str(path))
    assert f"{path}: {key}:" in str(err.value)


def test_unknown_board_lists_shipped_ones():
    with pytest.raises(ConfigError, match="generic-mock"):
        load_board("pi-9000")
