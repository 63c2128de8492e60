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
from giter_agent.core.clikit import Formatter, add_commands, run

DEFAULT_CONFIG = Path("/etc/giter-agent/agent.toml")


def version_line() -> str:
    """``giter-agent 0.2.0``, and the agent environment it runs from, if any (an
    ``AgentUpdate`` installed it beside the installed package)."""
    import os

    env = os.environ.get("GITER_AGENT_ENV")
    return f"giter-agent {__version__}" + (f" (agent environment {env})" if env else "")


def _top_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG,
                   help=f"agent config file (default {DEFAULT_CONFIG})")
    p.add_argument("-v", "--verbose", action="store_true", help="log every step to stderr")


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with ``command`` the one whose only subcommand is that one
    (a sync imports and builds no other command's arguments)."""
    p = argparse.ArgumentParser(prog="giter-agent", formatter_class=Formatter,
                                description="GitOps edge agent: signed specs in, signed "
                                "status out.")
    _top_options(p)
    p.add_argument("--version", action="version", version=version_line())
    # Module names cannot hold a dash: serve-serial lives in serve_serial.py.
    add_commands(p, "giter_agent.cli.commands", COMMANDS if command is None else (command,),
                 lambda name: name.replace("-", "_"))
    return p


def _pre(line: list[str]) -> tuple[argparse.Namespace, list[str]] | None:
    """The top-level options of ``line`` and what follows them (the command first), or
    None when they do not parse (the whole parser then says why)."""
    pre = argparse.ArgumentParser(add_help=False, exit_on_error=False,
                                  formatter_class=Formatter)
    _top_options(pre)
    try:
        return pre.parse_known_args(line)
    except argparse.ArgumentError:
        return None


def main(argv: list[str] | None = None) -> int:
    # An AgentUpdate may have selected another environment: it runs instead (exec), and
    # `--version` says its version, the one that runs.
    from giter_agent.cli.boot import boot

    line = sys.argv[1:] if argv is None else argv
    pre = _pre(line)
    if "--version" in line and pre is not None:
        boot(argparse.Namespace(command="--version", config=pre[0].config), argv)
    # The command named first (no top-level -h before it): only its parser is built.
    rest = pre[1] if pre is not None else []
    command = rest[0] if rest and rest[0] in COMMANDS else None
    args = _parser(command).parse_args(argv)
    boot(args, argv)
    return run("giter-agent", args, argv)


def entry() -> int:
    """The ``giter-agent`` process (console script, Debian launcher, ``python -m``):
    ``main`` as its one job (``giter_agent.core.lifetime``)."""
    from giter_agent.core.lifetime import one_job

    return one_job(main)


if __name__ == "__main__":
    sys.exit(entry())
