"""``giter-agent``: the command line of the device side.

Builds the parser from ``cli.commands`` (one module per subcommand) and turns every
typed error into one line on stderr and a non-zero exit; exit codes are listed in the
README.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from giter_agent import __version__
from giter_agent.cli.commands import COMMANDS
from giter_agent.core.clikit import add_commands, run

DEFAULT_CONFIG = Path("/etc/giter-agent/agent.toml")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="giter-agent",
                                description="GitOps edge agent: signed specs in, signed "
                                "status out.")
    p.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG,
                   help=f"agent config file (default {DEFAULT_CONFIG})")
    p.add_argument("-v", "--verbose", action="store_true", help="log every step to stderr")
    p.add_argument("--version", action="version", version=f"giter-agent {__version__}")
    # Module names cannot hold a dash: serve-serial lives in serve_serial.py.
    add_commands(p, "giter_agent.cli.commands", COMMANDS, lambda name: name.replace("-", "_"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # An AgentUpdate may have selected another environment: it runs instead (exec).
    from giter_agent.cli.boot import boot

    boot(args, argv)
    return run("giter-agent", args, argv)


if __name__ == "__main__":
    sys.exit(main())
