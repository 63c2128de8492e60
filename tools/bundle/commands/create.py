"""``giter-bundle create STICK``: write the bundle the target devices need onto a USB stick.

Writes ``STICK/giter/inbox/<branch>.bundle``: the spec branch, with the newest commit
that every target device is known to hold as its only prerequisite (from the spec
commit each one last reported; see ``giter_bundle.fleet_bundle``), or a full bundle
when a target has never reported. Beside it, ``hub-status.txt`` names the status
commit the hub holds of each target, which the device's status bundle then leaves out.
Targets are every enrolled device, or those named with ``--device``. Older bundles of
the branch on the stick are removed: a device that is ahead of one would refuse it as a
rollback. The spec is linted first and not shipped if it fails (``--no-lint`` ships
anyway). Every commit the bundle carries is then verified by the rules a device applies
(``giter_agent.trust.spec_rule.verify_update``: signed by a key the trust file in force lists, a tip
whose ``Expires:`` is not past): a bundle a device would refuse is not written, and the
command says which commit and why. ``--output FILE`` writes the bundle elsewhere
instead of a stick. The result passes ``git bundle verify``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = "write the smallest bundle every target device can apply to a USB stick"


def add_arguments(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("stick", nargs="?", type=Path,
                       help="the stick's mount point (giter/inbox/ is made there)")
    where.add_argument("-o", "--output", type=Path, metavar="FILE",
                       help="write the bundle to FILE instead")
    p.add_argument("--device", action="append", metavar="ID",
                   help="only for this device (repeatable; default: every enrolled device)")
    p.add_argument("--full", action="store_true", help="a full bundle, whatever is known")
    p.add_argument("--no-lint", action="store_true", help="ship even if lint finds errors")
    p.add_argument("--allowed-signers", type=Path, metavar="FILE",
                   help="the publisher keys the devices pinned (default: the trust file on "
                   "the branch, which is what init tells you to install)")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--progress", action="store_true",
                       help="show progress even for a small bundle")
    shown.add_argument("-q", "--quiet", action="store_true", help="no progress")


def _verify_as_devices(exchange: Any, plan: Any, allowed_signers: Path | None) -> None:
    """Refuse (PublisherError) when a target device would refuse what the bundle carries.

    By the devices' own rule (``fleet_bundle.verify_plan``), from the commit each target
    holds (every one from the first, for a target that never reported), against a device
    pinned with ``allowed_signers`` or the branch's trust file; the tip must not have
    expired.
    """
    from datetime import UTC, datetime

    from giter_bundle.errors import PublisherError
    from giter_bundle.fleet_bundle import verify_plan

    verified = verify_plan(exchange, plan, allowed_signers)
    if verified.expires is not None and verified.expires <= datetime.now(UTC):
        raise PublisherError(f"not shipped: a device would refuse {exchange.branch}: its tip "
                             f"expired at {verified.expires.isoformat()} (Expires: trailer); "
                             "commit again with a later one", reason="SpecExpired")


def run(args: argparse.Namespace) -> int:
    from giter_agent.core.layout import HUB_STATUS, INBOX
    from giter_bundle.commands import open_exchange
    from giter_bundle.errors import UsageError
    from giter_bundle.fleet_bundle import (
        bundle_name,
        plan_bundle,
        superseded,
        write_hub_status,
        write_plan,
    )
    from giter_bundle.lint import lint_tree
    from giter_bundle.progress import Progress
    from giter_bundle.secrets import former_keys

    with open_exchange(args) as exchange:
        plan = plan_bundle(exchange, args.device, full=args.full)
        if not args.no_lint:
            errors = [f for f in lint_tree(exchange.history.object_store,
                                           exchange.commit(plan.tip).tree,
                                           former_keys=former_keys(exchange)) if f.error]
            if errors:
                for finding in errors:
                    print(finding.line())
                print(f"not shipped: {exchange.branch} has {len(errors)} lint error(s) "
                      "(--no-lint to ship anyway)")
                return 1
        _verify_as_devices(exchange, plan, args.allowed_signers)
        if args.output is not None:
            target = args.output
        else:
            if not args.stick.is_dir():
                raise UsageError(f"{args.stick} is not a folder (is the stick mounted?)")
            inbox = args.stick / INBOX
            inbox.mkdir(parents=True, exist_ok=True)
            target = inbox / bundle_name(exchange.branch)
        progress = Progress(f"writing {target.name}", force=args.progress, quiet=args.quiet)
        write_plan(exchange, plan, target, progress)
        removed = [] if args.output else superseded(exchange, target.parent, target, plan.tip)
        for old in removed:
            old.unlink()
            print(f"removed {old.name}: an older state of {exchange.branch}")
        if args.output is None and write_hub_status(target.parent, plan.targets):
            print(f"wrote {target.parent / HUB_STATUS}: what the hub holds of each device's "
                  "status (their status bundles leave it out)")
        base = (f"needs {plan.prerequisite.decode()[:12]}" if plan.prerequisite
                else "full bundle, needs nothing")
        print(f"wrote {target} ({target.stat().st_size} bytes): {exchange.branch} at "
              f"{plan.tip.decode()[:12]}, {base}")
        for t in plan.targets:
            print(f"  {t.device:<24} {t.note}")
        if not plan.targets:
            print("  (no devices enrolled: a full bundle serves any device)")
    return 0
