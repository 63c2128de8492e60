"""``giter-bundle``: the publisher's command line (enrol, sign, lint, bundle, import, status).

Builds the parser from ``giter_bundle.commands`` (one module per subcommand, as the
agent's CLI does) and turns every typed error into one line on stderr. Exit codes:
``0`` done; ``1`` something was refused or found wrong (a lint error, a bad signature, a
forged status bundle); ``2`` the command could not start (usage, not a repository, no
key).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from giter_agent import __version__
from giter_agent.core.clikit import add_commands, run
from giter_bundle.commands import COMMANDS, module_name


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="giter-bundle",
                                description="The publisher's toolkit for a giter fleet: enrol "
                                "devices, sign specs, carry bundles, read back status.")
    p.add_argument("-C", "--repo", type=Path, default=Path("."), metavar="DIR",
                   help="the exchange repository (default: the current folder)")
    p.add_argument("--branch", default="main", help="the spec branch (default main)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every step to stderr")
    p.add_argument("--version", action="version", version=f"giter-bundle {__version__}")
    add_commands(p, "giter_bundle.commands", COMMANDS, module_name)
    return p


def main(argv: list[str] | None = None) -> int:
    return run("giter-bundle", _parser().parse_args(argv))


def entry() -> int:
    """The ``giter-bundle`` process: ``main`` as its one job
    (``giter_agent.core.lifetime``)."""
    from giter_agent.core.lifetime import one_job

    return one_job(main)


if __name__ == "__main__":
    sys.exit(entry())
