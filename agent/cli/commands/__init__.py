"""The ``giter-agent`` subcommands, one module each.

Each module has ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``,
and imports only what its command needs, inside ``run``: building the parser imports
every command module, so their top level must stay light (RAM on a 512 MB board).
To add a command, add a module and a line to ``COMMANDS`` (a dash in a command's name
is an underscore in its module's: ``serve-serial`` lives in ``serve_serial.py``).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from giter_agent.config.agent_toml import Config

COMMANDS = ("sync", "run", "status", "plan", "key", "doctor", "serve-serial", "demo")


def load_config(args: argparse.Namespace, *, writes: bool = True) -> Config:
    """The validated config named by ``-c`` (raises ConfigError naming the key).

    A command that ``writes`` the state directory refuses to run as root on one that
    belongs to the service user (``giter_agent.core.access.refuse_root``)."""
    from giter_agent.config.agent_toml import load
    from giter_agent.core.access import refuse_root

    config = load(args.config)
    if writes:
        refuse_root(config.state_dir, "giter-agent", getattr(args, "argv", None))
    return config
