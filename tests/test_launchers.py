"""The Debian package's launchers (debian/bin): the private folder first, their own
folder not searched at all, whether started by name or through the link the units use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRIVATE = "/usr/share/giter-agent"
PACKAGES = {"giter_agent": "agent", "giter_bundle": "tools/bundle",
            "giter_boards": "board-configs"}


@pytest.fixture
def installed(tmp_path):
    """``bin/`` with both launchers, pointed at a private folder of this checkout's
    packages; ``bin/`` also holds an ``argparse.py`` that must never be imported."""
    private = tmp_path / "private"
    private.mkdir()
    for name, folder in PACKAGES.items():
        (private / name).symlink_to(ROOT / folder)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "argparse.py").write_text("raise SystemExit('the launcher folder was searched')\n")
    for name in ("giter-agent", "giter-bundle"):
        text = (ROOT / "debian" / "bin" / name).read_text()
        assert PRIVATE in text
        (bin_dir / name).write_text(text.replace(PRIVATE, str(private)))
    lib = tmp_path / "lib" / "bin"  # the units start /usr/lib/giter-agent/bin/giter-agent
    lib.mkdir(parents=True)
    (lib / "giter-agent").symlink_to(bin_dir / "giter-agent")
    return bin_dir, lib


@pytest.mark.parametrize("launcher", ["bin/giter-agent", "bin/giter-bundle",
                                      "lib/giter-agent"])
def test_a_launcher_searches_its_private_folder_and_not_its_own(installed, launcher):
    bin_dir, lib = installed
    script = (bin_dir if launcher.startswith("bin/") else lib) / launcher.split("/")[1]
    out = subprocess.run([sys.executable, str(script), "--version"], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(("giter-agent ", "giter-bundle ")), out.stdout
