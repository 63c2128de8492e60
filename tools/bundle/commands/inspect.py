"""``giter-bundle inspect FILE``: what a bundle holds and whether it would be accepted.

Shows its refs and prerequisites, every commit it brings with its signer and the
verdict of the agent's own verifier (spec commits against the trust file in their
parent's tree; status commits against the device's enrolment), the resources it
touches, and the artifacts it carries (files added or changed under ``artifacts/``, with
their sizes). Nothing is imported: the bundle is checked in a quarantine that is dropped.
Uses the repository of ``-C`` when there is one (a bundle with prerequisites needs
it), a scratch one otherwise. Exits 1 unless every commit verifies.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "show a bundle's refs, commits, signers, verdicts and resources, without importing"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="a bundle file")
    p.add_argument("--allowed-signers", type=Path, metavar="FILE",
                   help="publisher keys to check root commits with (default: the "
                   "repository's trust file)")
    from giter_agent.core.clikit import add_output_option

    add_output_option(p)


def run(args: argparse.Namespace) -> int:
    from giter_agent.core.clikit import emit
    from giter_bundle.errors import UsageError
    from giter_bundle.exchange import Exchange
    from giter_bundle.inspection import inspect_bundle, render

    try:
        exchange = Exchange.open(args.repo, args.branch)
    except UsageError as exc:
        if exc.reason != "NotARepository":
            raise
        exchange = None
    try:
        doc = inspect_bundle(args.file, exchange, args.allowed_signers)
    finally:
        if exchange is not None:
            exchange.close()
    if args.output_format != "text":
        emit(doc, args.output_format)
    else:
        print(render(doc), end="")
    return 0 if doc["ok"] else 1
