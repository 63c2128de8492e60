"""``giter-bundle report --html DIR``: the fleet as a page to look at, from the status branches.

Writes ``DIR/index.html``: one self-contained file (inline CSS, SVG and script, nothing
fetched, no server), so it opens from a stick on an air-gapped laptop. It shows the
fleet table with each device's conditions and notes (as ``status``), rows coloured by
what needs a look (diverged from the branch, behind, not Ready, stale, refused), and
per device its Ready/not-Ready history and a chart per sensor (value, and each report
window's min/max/mean). Built only from ``refs/heads/status/*`` and the spec branch:
``import`` or a hub's fetch first. docs/report.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write the fleet report: a self-contained HTML page with history and sensor plots"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--html", type=Path, required=True, metavar="DIR",
                   help="the folder to write index.html into (made if missing)")
    p.add_argument("--history", type=int, default=None, metavar="N",
                   help="at most N reports per device (default 500)")


def run(args: argparse.Namespace) -> int:
    import time

    from giter_agent.core.durable import atomic_writer
    from giter_bundle.commands import open_exchange
    from giter_bundle.errors import UsageError
    from giter_bundle.fleet_report import DEFAULT_HISTORY, fleet_report
    from giter_bundle.report_html import render_html

    history = DEFAULT_HISTORY if args.history is None else args.history
    if history < 1:
        raise UsageError("--history must be at least 1")
    if args.html.exists() and not args.html.is_dir():
        raise UsageError(f"{args.html} is not a folder")
    with open_exchange(args) as exchange:
        doc = fleet_report(exchange, history)
    page = render_html(doc, time.time()).encode()
    try:
        args.html.mkdir(parents=True, exist_ok=True)
        with atomic_writer(args.html / "index.html") as fh:
            fh.write(page)
    except OSError as exc:
        raise UsageError(f"{args.html}: cannot write ({exc.strerror or exc})") from None
    print(f"wrote {args.html / 'index.html'} ({len(page) // 1024} KiB, "
          f"{len(doc['devices'])} devices)")
    return 0
