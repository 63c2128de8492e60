"""``giter-agent`` started as an installed device starts it, for the whole-process benches.

A development checkout runs the agent through an editable install: at every start,
``site`` runs the editable finder's ``.pth`` (it imports ``pathlib`` and friends before
the agent's first line) and the setuptools hook. A board runs neither: the Debian
package's ``/usr/bin/giter-agent`` puts its private folder first on ``sys.path`` and
imports from there (``debian/bin/giter-agent``), and ``scripts/install`` installs a
regular (not editable) package into its venv.

``layout(work)`` builds that shape from this checkout, without installing anything:

- ``work/venv``: a new virtual environment (``--without-pip``) on the same interpreter,
  whose only ``.pth`` names the development environment's site-packages folder as a
  plain path (dulwich, msgpack, cryptography, PyYAML from there; a folder named by a
  ``.pth`` line is searched, its own ``.pth`` files are not run);
- ``work/private/giter_agent`` and ``giter_boards``: links to this checkout's
  ``agent`` and ``board-configs`` folders (the packages, as the Debian package's
  private folder holds them);
- ``work/giter-agent``: ``debian/bin/giter-agent`` itself, its folder replaced.

Returns the command that starts the agent and the interpreter's own ``-c pass``, both
run by that environment's Python. Compiled bytecode is used as installed packages
have it (``env(work)``: ``PYTHONDONTWRITEBYTECODE`` unset, a cache folder of its own).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PRIVATE = "/usr/share/giter-agent"
PACKAGES = {"giter_agent": "agent", "giter_boards": "board-configs"}


def layout(work: Path, repo: Path = REPO_ROOT) -> tuple[list[str], list[str]]:
    """(the ``giter-agent`` command, the interpreter's ``python -c pass``) of a device-like
    install under ``work`` of the checkout at ``repo`` (this one by default; another
    to compare two trees)."""
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path("
                           "'purelib'))"], check=True, capture_output=True, text=True
                          ).stdout.strip()
    deps = sysconfig.get_path("purelib")  # the development environment's
    Path(site, "giter-deps.pth").write_text(f"{deps}\n")
    private = work / "private"
    private.mkdir()
    # The import names, as pyproject.toml's package-dir maps them to folders.
    for name, folder in PACKAGES.items():
        (private / name).symlink_to(repo / folder)
    launcher = (repo / "debian" / "bin" / "giter-agent").read_text()
    assert PRIVATE in launcher, "debian/bin/giter-agent no longer names its private folder"
    script = work / "giter-agent"
    script.write_text(launcher.replace(PRIVATE, str(private)))
    return [str(python), str(script)], [str(python), "-c", "pass"]


def env(work: Path) -> dict[str, str]:
    """The environment the agent runs in: compiled bytecode, cached under ``work``."""
    out = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    out["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return out


def add_editable_flag(parser: argparse.ArgumentParser) -> None:
    """``--editable``: measure the development console script instead (the old way)."""
    parser.add_argument("--editable", action="store_true",
                        help="start the agent through this environment's console script (an "
                        "editable install) instead of as a device does")


def commands(work: Path, editable: bool) -> tuple[list[str], list[str]]:
    """``layout(work)``, or with ``editable`` this development environment's console
    script and interpreter: (the ``giter-agent`` command, ``python -c pass``)."""
    if editable:
        return [str(Path(sys.executable).parent / "giter-agent")], [sys.executable, "-c", "pass"]
    return layout(work)
