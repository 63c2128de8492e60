"""``giter-agent sync``: one pass from the hub ([network] url), a USB stick or a bundle file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "import bundles, verify, apply, report status"


def add_arguments(p: argparse.ArgumentParser) -> None:
    # With neither option, the pass fetches from and pushes to the configured [network] url.
    src = p.add_mutually_exclusive_group()
    src.add_argument("--usb", type=Path, metavar="DIR",
                     help="a mounted stick: reads DIR/giter/inbox, writes DIR/giter/outbox")
    src.add_argument("--bundle", type=Path, metavar="FILE", help="import one bundle file")
    p.add_argument("--outbox", type=Path, metavar="DIR",
                   help="with --bundle: also write the status bundle and receipt here")


def run(args: argparse.Namespace) -> int:
    from giter_agent.cli.commands import load_config
    from giter_agent.core.durable import shown
    from giter_agent.sync.agent import Agent

    # One-shot: an Output reports what is true once this process has exited.
    agent = Agent(load_config(args), lasting=False)
    try:
        if args.usb is not None:
            from giter_agent.transport.usb import sync_stick

            report = sync_stick(agent, args.usb)
        elif args.bundle is None:
            report = agent.sync_network()
        else:
            if not args.bundle.is_file():
                print(f"giter-agent: BundleUnreadable: {shown(str(args.bundle))}: no such file",
                      file=sys.stderr)
                return 1
            report = agent.sync([args.bundle], source=f"bundle:{shown(str(args.bundle))}")
            if args.outbox is not None:
                from giter_agent.transport.usb import write_outbox

                write_outbox(agent, args.outbox, report)
    finally:
        agent.close()
    line = f"{report.outcome}: {report.message}"
    if report.not_ready:
        line += f"; not Ready: {', '.join(report.not_ready)}"
    if report.stale:
        line += f"; STALE: {report.stale}"
    print(line, file=sys.stdout if report.exit_code == 0 else sys.stderr)
    return report.exit_code
