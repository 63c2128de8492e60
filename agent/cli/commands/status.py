"""``giter-agent status``: the applied spec, the last sync and each resource's conditions."""

from __future__ import annotations

import argparse
import json

HELP = "show the applied spec, last sync and conditions"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--line", action="store_true",
                   help="one line: the state in words and its LED code (the console line)")


def run(args: argparse.Namespace) -> int:
    from giter_agent.cli.commands import load_config
    from giter_agent.state.health import health
    from giter_agent.state.store import StateStore

    config = load_config(args)
    as_json = args.json
    state = StateStore(config.state_dir).load()
    words = health(state)
    doc = {
        "health": {"state": words.state, "reason": words.reason, "message": words.message},
        "deviceId": config.device_id,
        "acceptedCommit": state.accepted,
        "appliedCommit": state.applied,
        "statusCommit": state.status_tip,
        "expires": state.expires,
        "conditions": state.conditions,
        "lastSync": state.last_sync or None,
        "network": state.network or None,
        "resources": {k: {"path": r.get("path"), "status": r["status"]}
                      for k, r in sorted(state.resources.items())},
    }
    if as_json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    from giter_agent.device.status_led import LEGEND

    if args.line:
        print(f"giter-agent {config.device_id}: {words.line()} [LED: {LEGEND[words.state]}]")
        return 0
    last = state.last_sync
    print(f"device        {config.device_id}")
    print(f"state         {words.state} ({words.reason}: {words.message})")
    print(f"LED           {LEGEND[words.state]}")
    print(f"spec applied  {state.applied or 'none yet'}")
    if state.accepted != state.applied:
        print(f"spec accepted {state.accepted or 'none yet'} (not applied)")
    if last:
        print(f"last sync     {last['time']} from {last['source']}: "
              f"{last['outcome']} ({last['reason']}: {last['message']})")
    else:
        print("last sync     never")
    print(f"status commit {state.status_tip or 'none yet'}")
    if config.network is not None:
        net = state.network
        print(f"hub           {net.get('state', 'never contacted')}"
              + (f" since {net['since']} ({net['reason']}: {net['message']})"
                 if net.get("since") else f" ({config.network.url})"))
    for cond in state.conditions:
        if cond["type"] == "Stale" and cond["status"] == "True":
            print(f"STALE SPEC    {cond['message']} (since {cond['lastTransitionTime']})")
    if not state.resources:
        print("resources     none")
    from giter_agent.status.rows import resource_rows

    for row in resource_rows(state.resources, every_condition=True, since=True):
        print(row)
    return 0

