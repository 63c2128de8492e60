"""``giter-agent``: the command line of the device side.

Subcommands: ``sync`` (one pass from a USB folder or a bundle file), ``status`` (what
the device runs and how the last sync went, in words or JSON), ``key`` (the device's
public key as an allowed_signers line, for enrolment) and ``demo`` (the whole round
trip in a temporary folder). Errors print one line and exit non-zero; exit codes are
listed in the README.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from agent import __version__
from agent.errors import GiterError

DEFAULT_CONFIG = Path("/etc/giter-agent/agent.toml")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="giter-agent", description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG,
                   help=f"agent config file (default {DEFAULT_CONFIG})")
    p.add_argument("-v", "--verbose", action="store_true", help="log every step to stderr")
    p.add_argument("--version", action="version", version=f"giter-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("sync", help="import bundles, verify, apply, report status")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--usb", type=Path, metavar="DIR",
                     help="a mounted stick: reads DIR/giter/inbox, writes DIR/giter/outbox")
    src.add_argument("--bundle", type=Path, metavar="FILE", help="import one bundle file")
    s.add_argument("--outbox", type=Path, metavar="DIR",
                   help="with --bundle: also write the status bundle and receipt here")

    st = sub.add_parser("status", help="show the applied spec, last sync and conditions")
    st.add_argument("--json", action="store_true", help="machine-readable output")

    sub.add_parser("key", help="print the device public key as an allowed_signers line")

    d = sub.add_parser("demo", help="run the signed round trip in a temporary folder")
    d.add_argument("--keep", type=Path, metavar="DIR",
                   help="run in DIR (must be empty or absent) and keep it afterwards")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="giter-agent %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "demo":
            from agent.demo import run_demo

            return run_demo(args.keep)
        from agent.config import load

        config = load(args.config)
        if args.command == "status":
            return _status(config, args.json)
        from agent.sync import Agent

        agent = Agent(config)
        try:
            if args.command == "key":
                print(agent.public_key_line())
                return 0
            return _sync(agent, args)
        finally:
            agent.close()
    except GiterError as exc:
        print(f"giter-agent: {exc.reason}: {exc}", file=sys.stderr)
        return 2 if exc.reason in ("InvalidConfig", "NotAGiterStick") else 1
    except KeyboardInterrupt:
        return 130


def _sync(agent, args) -> int:  # type: ignore[no-untyped-def]
    from agent.usb import sync_stick, write_outbox

    if args.usb is not None:
        report = sync_stick(agent, args.usb)
    else:
        if not args.bundle.is_file():
            print(f"giter-agent: BundleUnreadable: {args.bundle}: no such file", file=sys.stderr)
            return 1
        report = agent.sync([args.bundle], source=f"bundle:{args.bundle}")
        if args.outbox is not None:
            write_outbox(agent, args.outbox, report)
    line = f"{report.outcome}: {report.message}"
    if report.not_ready:
        line += f"; not Ready: {', '.join(report.not_ready)}"
    if report.stale:
        line += f"; STALE: {report.stale}"
    print(line, file=sys.stdout if report.exit_code == 0 else sys.stderr)
    return report.exit_code


def _status(config, as_json: bool) -> int:  # type: ignore[no-untyped-def]
    from agent.state import StateStore

    state = StateStore(config.state_dir).load()
    doc = {
        "deviceId": config.device_id,
        "acceptedCommit": state.accepted,
        "appliedCommit": state.applied,
        "statusCommit": state.status_tip,
        "expires": state.expires,
        "conditions": state.conditions,
        "lastSync": state.last_sync or None,
        "resources": {k: {"path": r.get("path"), "status": r["status"]}
                      for k, r in sorted(state.resources.items())},
    }
    if as_json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    last = state.last_sync
    print(f"device        {config.device_id}")
    print(f"spec applied  {state.applied or 'none yet'}")
    if state.accepted != state.applied:
        print(f"spec accepted {state.accepted or 'none yet'} (not applied)")
    if last:
        print(f"last sync     {last['time']} from {last['source']}: "
              f"{last['outcome']} ({last['reason']}: {last['message']})")
    else:
        print("last sync     never")
    print(f"status commit {state.status_tip or 'none yet'}")
    for cond in state.conditions:
        if cond["type"] == "Stale" and cond["status"] == "True":
            print(f"STALE SPEC    {cond['message']} (since {cond['lastTransitionTime']})")
    if not state.resources:
        print("resources     none")
    for key, rec in sorted(state.resources.items()):
        for cond in rec["status"].get("conditions", []):
            mark = "Ready" if cond["status"] == "True" else "NOT READY"
            print(f"  {key:<30} {mark:<10} {cond['reason']}: {cond['message']} "
                  f"(since {cond['lastTransitionTime']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
