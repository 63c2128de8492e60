"""Which agent environment a process runs, and how one is started: the light half.

An ``AgentUpdate`` lays a new version of the agent down as an environment under
``<state_dir>/agent-envs/`` (``kinds.agent_envs`` builds and switches them); this module
is what the boot loader (``cli.boot``) needs at every start, kept free of the kinds so
that a command that finds no update pays for nothing more than a ``readlink``:

- ``running_env``: the environment this process runs in (``GITER_AGENT_ENV``, set by the
  boot loader when it starts one; None: the installed package);
- ``selected`` / ``exists`` / ``lib``: the ``current`` link and the environments on disk;
- ``launch_argv``: the command line that runs ``giter-agent`` from an environment: the
  installed package's interpreter, the environment's ``lib`` first on ``sys.path``,
  then the folders the installed package finds its libraries in (``base_paths``).
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

from giter_agent.core.layout import AGENT_ENVS, CURRENT, RELEASES, release_of

ENV_VAR = "GITER_AGENT_ENV"
LIB = "lib"
# The libraries the agent imports: where the installed package finds them goes on the
# path after an environment's own folder (found, never imported).
_LIBRARIES = ("dulwich", "yaml", "msgpack", "cryptography", "gpiozero", "colorzero",
              "serial", "urllib3", "typing_extensions")
# The environment's own ``entry`` (``core.lifetime``); an agent older than it has ``main``.
_LAUNCH = ("import os, sys; p = sys.argv[1].split(os.pathsep); del sys.argv[1]; "
           "sys.path[0:0] = p; import giter_agent.cli.main as m; "
           "sys.exit(getattr(m, 'entry', m.main)())")


def running_env() -> str | None:
    """The environment this process runs in (None: the installed package)."""
    return os.environ.get(ENV_VAR) or None


def root(state_dir: Path) -> Path:
    return Path(state_dir) / AGENT_ENVS


def lib(state_dir: Path, name: str) -> Path:
    return root(state_dir) / RELEASES / name / LIB


def selected(state_dir: Path) -> str | None:
    """The environment ``current`` names (None: none, or not one of ours)."""
    try:
        return release_of(os.readlink(root(state_dir) / CURRENT))
    except OSError:
        return None


def exists(state_dir: Path, name: str) -> bool:
    """Is ``releases/<name>`` a real folder (not a link)?"""
    try:
        return stat.S_ISDIR(os.lstat(root(state_dir) / RELEASES / name).st_mode)
    except OSError:
        return False


def base_paths() -> list[str]:
    """The folders the installed package finds its libraries in."""
    import importlib.util

    paths: list[str] = []
    for name in _LIBRARIES:
        with contextlib.suppress(ImportError, ValueError):
            spec = importlib.util.find_spec(name)
            if spec is not None and spec.origin:
                origin = Path(spec.origin)
                folder = str(origin.parent.parent if spec.submodule_search_locations
                             else origin.parent)
                if folder not in paths:
                    paths.append(folder)
    return paths


def launch_argv(env_lib: Path, args: Sequence[str], python: str | None = None,
                base: Sequence[str] | None = None) -> list[str]:
    """The command line that runs ``giter-agent ARGS`` from environment folder
    ``env_lib`` (``-P``: the working folder is not on the path)."""
    path = os.pathsep.join([str(env_lib), *(base_paths() if base is None else base)])
    return [python or sys.executable, "-P", "-c", _LAUNCH, path, *args]
