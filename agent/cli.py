"""``giter-agent``: the command line of the device side.

Builds the parser from ``agent.commands`` (one module per subcommand) and turns every
typed error into one line on stderr and a non-zero exit; exit codes are listed in the
README.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from agent import __version__
from agent.commands import COMMANDS
from agent.errors import GiterError

DEFAULT_CONFIG = Path("/etc/giter-agent/agent.toml")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="giter-agent",
                                description="GitOps edge agent: signed specs in, signed "
                                "status out.")
    p.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG,
                   help=f"agent config file (default {DEFAULT_CONFIG})")
    p.add_argument("-v", "--verbose", action="store_true", help="log every step to stderr")
    p.add_argument("--version", action="version", version=f"giter-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"agent.commands.{name.replace('-', '_')}")
        cmd = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(cmd)
        cmd.set_defaults(run=module.run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="giter-agent %(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except GiterError as exc:
        print(f"giter-agent: {exc.reason}: {exc}", file=sys.stderr)
        return 2 if exc.reason in ("InvalidConfig", "NotAGiterStick") else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
