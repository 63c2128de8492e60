"""``scripts/install`` picks the board from the device tree, or refuses; a re-run says
what differs. Run with ``--dry-run`` (it decides, says, and changes nothing) against a
config folder and a device-tree model file of the test's own."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from giter_agent.device.board import detect_board
from giter_agent.device.models import detect

REPO = Path(__file__).resolve().parents[1]


def model(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "model"
    path.write_bytes(text.encode() + b"\0")  # as the kernel writes it
    return path


@pytest.mark.parametrize(("text", "board"), [
    ("Raspberry Pi 4 Model B Rev 1.4", "rpi-4b"),
    ("Raspberry Pi 5 Model B Rev 1.0", "rpi-5"),
    ("Raspberry Pi 3 Model B Plus Rev 1.3", "rpi-3b-plus"),
    ("Raspberry Pi Zero 2 W Rev 1.0", "rpi-zero-2w"),
    ("Raspberry Pi Compute Module 4 Rev 1.0", "rpi-cm4"),
    ("linux,dummy-virt", "qemu-virt"),
    ("Raspberry Pi Compute Module 4S Rev 1.0", None),  # not a CM4: no board config
    ("Raspberry Pi 400 Rev 1.0", None),
])
def test_the_device_tree_model_names_the_board(tmp_path, text, board):
    assert detect(REPO / "board-configs", model(tmp_path, text)) == (board, text)
    assert detect_board(model(tmp_path, text)) == (board, text)  # the shipped configs


def install(tmp_path: Path, *args: str, model_text: str | None = None
            ) -> subprocess.CompletedProcess:
    signers = tmp_path / "allowed_signers"
    signers.write_text("publisher ssh-ed25519 AAAA\n")
    env = dict(os.environ, GITER_ETC=str(tmp_path / "etc"),
               GITER_DT_MODEL=str(tmp_path / "no-such-model"))
    if model_text is not None:
        env["GITER_DT_MODEL"] = str(model(tmp_path, model_text))
    return subprocess.run(["bash", str(REPO / "scripts/install"), "--allowed-signers",
                           str(signers), "--device-id", "pi-01", "--dry-run", *args],
                          env=env, capture_output=True, text=True, timeout=60, check=False)


pytestmark_root = pytest.mark.skipif(os.geteuid() != 0,
                                     reason="scripts/install re-runs itself with sudo")


@pytestmark_root
def test_install_detects_the_board_or_refuses(tmp_path):
    done = install(tmp_path, model_text="Raspberry Pi 4 Model B Rev 1.4")
    assert done.returncode == 0, done.stderr
    assert "board rpi-4b, from" in done.stdout
    assert "would write" in done.stdout and "board rpi-4b)" in done.stdout
    # A machine whose model no board config names (or that has no device tree, like a
    # laptop): no guess, and never generic-mock on a real board.
    for text in ("Some Vendor SBC v2", None):
        done = install(tmp_path, model_text=text)
        assert done.returncode == 1
        assert "cannot tell the board from" in done.stderr and "pass --board NAME" in done.stderr
        assert "rpi-4b" in done.stderr  # the names it may be given
    assert not (tmp_path / "etc").exists()  # nothing was written
    done = install(tmp_path, "--board", "rpi-99")
    assert done.returncode == 1 and "no such board config" in done.stderr


@pytestmark_root
def test_a_rerun_with_another_board_says_what_differs(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    config = etc / "agent.toml"
    config.write_text('device_id = "pi-01"\nboard = "rpi-4b"\n')
    before = config.read_bytes()
    done = install(tmp_path, "--board", "rpi-5")
    assert done.returncode == 1
    assert 'board = "rpi-4b" there, --board rpi-5 here' in done.stderr
    assert config.read_bytes() == before
    done = install(tmp_path, "--board", "rpi-4b")  # the same: kept, said so
    assert done.returncode == 0 and "would keep" in done.stdout and "board rpi-4b" in done.stdout
