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


def version_line() -> str:
    """``giter-agent 0.2.0``, and the agent environment it runs from, if any (an
    ``AgentUpdate`` installed it beside the installed package)."""
    import os

    env = os.environ.get("GITER_AGENT_ENV")
    return f"giter-agent {__version__}" + (f" (agent environment {env})" if env else "")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="giter-agent",
                                description="GitOps edge agent: signed specs in, signed "
                                "status out.")
    p.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG,
                   help=f"agent config file (default {DEFAULT_CONFIG})")
    p.add_argument("-v", "--verbose", action="store_true", help="log every step to stderr")
    p.add_argument("--version", action="version", version=version_line())
    # Module names cannot hold a dash: serve-serial lives in serve_serial.py.
    add_commands(p, "giter_agent.cli.commands", COMMANDS, lambda name: name.replace("-", "_"))
    return p


def main(argv: list[str] | None = None) -> int:
    # An AgentUpdate may have selected another environment: it runs instead (exec), and
    # `--version` says its version, the one that runs.
    from giter_agent.cli.boot import boot

    line = sys.argv[1:] if argv is None else argv
    if "--version" in line:
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG)
        known, _rest = pre.parse_known_args(line)
        boot(argparse.Namespace(command="--version", config=known.config), argv)
    args = _parser().parse_args(argv)
    boot(args, argv)
    return run("giter-agent", args, argv)


if __name__ == "__main__":
    sys.exit(main())
