"""``giter-bundle import STICK``: verify the devices' status bundles and take in the good ones.

Reads every ``STICK/giter/outbox/<id>.bundle``. Each new status commit must be signed
by the key enrolled for ``<id>`` and change nothing but the status of that device's own
resources; then ``refs/heads/status/<id>`` moves in the hub repository. A bundle that
fails is refused with its reason and changes nothing. Exits 1 if any was refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "verify the status bundles in a stick's outbox and update status/<device>"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("stick", type=Path, help="the stick's mount point (reads giter/outbox/)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from giter_agent.core.layout import OUTBOX
    from giter_bundle.commands import open_exchange
    from giter_bundle.errors import UsageError
    from giter_bundle.status_import import import_outbox

    outbox = args.stick / OUTBOX
    if not outbox.is_dir():
        raise UsageError(f"{args.stick}: no {OUTBOX}/ folder (no device has synced from "
                         "this stick yet)")
    with open_exchange(args) as exchange:
        results = import_outbox(exchange, outbox)
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        for r in results:
            print(f"{r.file:<28} {r.verdict.upper():<11} {r.reason}: {r.message}")
        if not results:
            print(f"no status bundles in {outbox}")
    return 1 if any(r.verdict == "refused" for r in results) else 0
