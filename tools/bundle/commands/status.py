"""``giter-bundle status``: the fleet table from the imported status branches.

Per device: the spec commit it last observed and how far behind the branch that is,
Ready and not Ready resources, when it reported (device clock), and what needs a look:
a stale (expired) spec, bundles it refused, invalid resource files. ``-o json|yaml``
(or ``--json``) prints the same as data for scripts.

``--diverged-for 30m`` adds the devices that have not converged on the spec tip (its
newest commit observed, every resource Ready) for that long or longer, and exits 3 when
there is one: a check for cron, a systemd timer or a monitoring system
(``giter-bundle watch`` runs it continuously and raises one alert per change).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from giter_bundle.divergence import Divergence

HELP = "show the fleet: observed spec, lag, readiness, last report, refusals"
EXIT_DIVERGED = 3  # --diverged-for found a device


def add_arguments(p: argparse.ArgumentParser) -> None:
    from giter_agent.core.clikit import add_output_option

    add_output_option(p)
    p.add_argument("--diverged-for", metavar="DURATION",
                   help="also list devices not converged on the spec tip for this long "
                   "(90s, 30m, 2h, 1d) and exit 3 if there is one")


def run(args: argparse.Namespace) -> int:
    from giter_agent.core.clikit import emit
    from giter_bundle.commands import open_exchange
    from giter_bundle.fleet_status import fleet_status, render

    threshold = None
    if args.diverged_for is not None:
        from giter_bundle.divergence import parse_duration

        threshold = parse_duration(args.diverged_for)
    late: list[Divergence] = []
    with open_exchange(args) as exchange:
        doc = fleet_status(exchange)
        if threshold is not None:
            import time

            from giter_bundle import divergence

            now = time.time()
            late = divergence.overdue(divergence.diverged(exchange, doc, now=now,
                                                          threshold=threshold),
                                      now=now, threshold=threshold)
            doc["diverged"] = [d.as_dict(now) for d in late]
    if args.output_format != "text":
        emit(doc, args.output_format)
    else:
        print(render(doc), end="")
        if threshold is not None:
            print(divergence.render(late, now=now, threshold=threshold), end="")
    return EXIT_DIVERGED if late else 0
