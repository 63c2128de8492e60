"""``giter-bundle status``: the fleet table from the imported status branches.

Per device: the spec commit it last observed and how far behind the branch that is,
Ready and not Ready resources, when it reported (device clock), and what needs a look:
a stale (expired) spec, bundles it refused, invalid resource files. ``-o json|yaml``
(or ``--json``) prints the same as data for scripts.
"""

from __future__ import annotations

import argparse

HELP = "show the fleet: observed spec, lag, readiness, last report, refusals"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from giter_agent.core.clikit import add_output_option

    add_output_option(p)


def run(args: argparse.Namespace) -> int:
    from giter_agent.core.clikit import emit
    from giter_bundle.commands import open_exchange
    from giter_bundle.fleet_status import fleet_status, render

    with open_exchange(args) as exchange:
        doc = fleet_status(exchange)
    if args.output_format != "text":
        emit(doc, args.output_format)
    else:
        print(render(doc), end="")
    return 0
