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

The venv is made from the system's interpreter, ``/usr/bin/python3``, which a board runs
(``scripts/install``'s venv and the Debian package's launcher), when it is of the
running Python's version (so that the development environment's compiled libraries
load in it); else from the running interpreter. ``--python PATH`` names another one: a
development build without profile-guided optimisation, as this machine's pyenv Python
is, takes about a sixth longer over the same work (docs/performance.md, "Ed25519 keys on
Debian's cryptography, and the interpreter a board runs").

``--debian`` lays out what the Debian package installs instead (``debian_layout``):
``/usr/bin/python3`` itself, no venv, Debian's PyYAML, cryptography and msgpack
(``apt-get install python3-yaml python3-cryptography python3-msgpack python3-serial
python3-colorzero python3-typing-extensions``), and the private folder holding the
agent beside the pure-Python wheels of ``debian/vendor`` (dulwich, gpiozero, urllib3;
``scripts/deb`` fetches them).

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
import zipfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
PRIVATE = "/usr/share/giter-agent"
SYSTEM_PYTHON = "/usr/bin/python3"
DEBIAN_LIBRARIES = ("yaml", "cryptography", "msgpack")  # from apt, as the package depends
PACKAGES = {"giter_agent": "agent", "giter_boards": "board-configs"}
DEVICE = "pi-bench"  # the id of the benches' device


def operator(work: Path) -> tuple[Any, Path]:
    """A new operator key, and ``work/allowed_signers`` naming it (what the device pins)."""
    from giter_agent.trust import sshsig

    key = sshsig.generate_ed25519()
    signers = work / "allowed_signers"
    signers.write_text(f'ops namespaces="git" {sshsig.public_key_of(key).openssh()}\n')
    return key, signers


def device_config(folder: Path, signers: Path, root: Path) -> Path:
    """``folder/agent.toml`` of the benches' device: the mock board, its state in
    ``folder/state``, ``signers`` pinned, files written under ``root``."""
    config = folder / "agent.toml"
    config.write_text(
        f'device_id = "{DEVICE}"\nstate_dir = "state"\nboard = "generic-mock"\n'
        f'allowed_signers = "{signers}"\n[files]\nroots = ["{root}"]\n')
    return config


def layout(work: Path, repo: Path = REPO_ROOT, python: str = sys.executable
           ) -> tuple[list[str], list[str]]:
    """(the ``giter-agent`` command, the interpreter's ``python -c pass``) of a device-like
    install under ``work`` of the checkout at ``repo`` (this one by default; another
    to compare two trees), in a venv made from ``python``."""
    venv = work / "venv"
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True)
    venv_python = venv / "bin" / "python"
    site = subprocess.run([str(venv_python), "-c", "import sysconfig; print(sysconfig.get_path("
                           "'purelib'))"], check=True, capture_output=True, text=True
                          ).stdout.strip()
    deps = sysconfig.get_path("purelib")  # the development environment's
    Path(site, "giter-deps.pth").write_text(f"{deps}\n")
    script = _private(work, repo)
    return [str(venv_python), str(script)], [str(venv_python), "-c", "pass"]


def debian_layout(work: Path, repo: Path = REPO_ROOT) -> tuple[list[str], list[str]]:
    """``layout``'s pair for the Debian package's layout (see the module): the system
    interpreter and libraries, the vendored wheels in the private folder."""
    wheels = sorted((repo / "debian" / "vendor").glob("*.whl"))
    if not wheels:
        raise SystemExit("--debian: debian/vendor holds no wheels (scripts/deb fetches them)")
    missing = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import importlib.util, sys; print(' '.join(n for n in sys.argv[1:]"
         " if importlib.util.find_spec(n) is None))", *DEBIAN_LIBRARIES],
        check=True, capture_output=True, text=True).stdout.split()
    if missing:
        raise SystemExit(f"--debian: {SYSTEM_PYTHON} lacks {' '.join(missing)}: apt-get "
                         "install " + " ".join(f"python3-{m}" for m in missing))
    script = _private(work, repo)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(work / "private")
    return [SYSTEM_PYTHON, str(script)], [SYSTEM_PYTHON, "-c", "pass"]


def _private(work: Path, repo: Path) -> Path:
    """``work/private`` with the checkout's packages, and the launcher pointed at it."""
    private = work / "private"
    private.mkdir()
    # The import names, as pyproject.toml's package-dir maps them to folders.
    for name, folder in PACKAGES.items():
        (private / name).symlink_to(repo / folder)
    launcher = (repo / "debian" / "bin" / "giter-agent").read_text()
    assert PRIVATE in launcher, "debian/bin/giter-agent no longer names its private folder"
    script = work / "giter-agent"
    script.write_text(launcher.replace(PRIVATE, str(private)))
    return script


def env(work: Path) -> dict[str, str]:
    """The environment the agent runs in: compiled bytecode, cached under ``work``."""
    out = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    out["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return out


def add_flags(parser: argparse.ArgumentParser) -> None:
    """``--editable``, ``--python`` and ``--debian``: which install to start the agent from."""
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--editable", action="store_true",
                     help="start the agent through this environment's console script (an "
                     "editable install) instead of as a device does")
    how.add_argument("--python", default=board_python(), metavar="PATH",
                     help="the interpreter the device-like venv is made from (default: "
                     f"{SYSTEM_PYTHON}, the one a board runs, when it is this Python's version; "
                     "else this one)")
    how.add_argument("--debian", action="store_true",
                     help="the Debian package's layout: /usr/bin/python3 with Debian's "
                     "libraries and the wheels of debian/vendor")


def board_python() -> str:
    """The system's interpreter, which a board's install runs, when it is this Python's
    version (the development environment's compiled libraries load in it); else this one."""
    if os.path.exists(SYSTEM_PYTHON):
        version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
                                 capture_output=True, text=True).stdout.strip()
        if version == str(tuple(sys.version_info[:2])):
            return SYSTEM_PYTHON
    return sys.executable


def commands(work: Path, args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The (``giter-agent`` command, ``python -c pass``) that ``add_flags``' options name:
    ``layout``, ``debian_layout``, or with ``--editable`` this development environment's
    console script and interpreter."""
    if args.editable:
        print(f"install: this environment's console script ({sys.executable})")
        return [str(Path(sys.executable).parent / "giter-agent")], [sys.executable, "-c", "pass"]
    if args.debian:
        print(f"install: the Debian package's layout ({SYSTEM_PYTHON}, Debian's libraries)")
        return debian_layout(work)
    version = subprocess.run([args.python, "--version"], capture_output=True, text=True
                             ).stdout.strip()
    print(f"install: a venv on {args.python} ({version}), this environment's libraries")
    return layout(work, python=args.python)
