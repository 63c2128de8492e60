"""Wheels of giter-agent built from this checkout with another version, for the update tests.

``build(out, version, broken=False)`` copies the files a wheel is built from into a temp
folder, sets the version in ``pyproject.toml`` and ``giter_agent.__version__``, and runs
setuptools' own PEP 517 hook (``build_meta.build_wheel``) offline, in the system Python
(Debian's python3-setuptools and python3-wheel, as the Debian package's build uses):
no index, no network. The licence line is written the older way for Debian 12's
setuptools, as ``debian/rules`` does. ``broken``: the daemon's loop and the sync layer raise
when imported, so ``giter-agent --version`` works and every sync or daemon start
crashes (a bad build that passes a smoke test).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
_SOURCES = ("pyproject.toml", "README.md", "agent", "tools", "board-configs", "share")


def can_build() -> str | None:
    """Why wheels cannot be built here, or None."""
    done = subprocess.run([SYSTEM_PYTHON, "-c", "import setuptools.build_meta, wheel"],
                          capture_output=True, check=False)
    if done.returncode != 0:
        return "no setuptools and wheel for /usr/bin/python3 (python3-setuptools python3-wheel)"
    return None


def build(work: Path, version: str, *, broken: bool = False) -> Path:
    """A ``giter_agent-<version>-py3-none-any.whl`` built from this checkout, in ``work``."""
    src = work / f"src-{version}"
    src.mkdir(parents=True)
    for name in _SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns(
                "__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    pyproject = (src / "pyproject.toml").read_text()
    pyproject = re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', pyproject, count=1)
    pyproject = re.sub(r'(?m)^license = "(.*)"$', r'license = {text = "\1"}', pyproject)
    (src / "pyproject.toml").write_text(pyproject)
    init = src / "agent/__init__.py"
    init.write_text(re.sub(r'(?m)^__version__ = ".*"$', f'__version__ = "{version}"',
                           init.read_text()))
    if broken:
        # The daemon itself and the sync layer (a one-shot sync, a pass worker).
        for module in ("agent/daemon/loop.py", "agent/sync/applier.py"):
            with (src / module).open("a") as fh:
                fh.write('\nraise RuntimeError("this build of giter-agent is broken")\n')
    out = work / "wheels" / version
    out.mkdir(parents=True)
    done = subprocess.run([SYSTEM_PYTHON, "-c", "import sys, setuptools.build_meta as b; "
                           "print(b.build_wheel(sys.argv[1]))", str(out)], cwd=src,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(f"building the {version} wheel failed: {done.stderr[-800:]}")
    return out / done.stdout.strip().splitlines()[-1]
