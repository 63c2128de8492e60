"""``giter-agent status``: the applied spec, the last sync and each resource's conditions.

The exit code says the state, so a script (or a monitoring check) needs no parsing:
``0`` in-sync, ``1`` refused, ``3`` error (a resource not Ready, a failed pass, a hub
that will not serve us), ``4`` offline (or nothing applied yet), ``5`` stale (the spec's
``Expires:`` has passed); ``2`` is a configuration or usage error, as for every command.
The same codes whatever the output format (``-o json|yaml``, ``--line``).
"""

from __future__ import annotations

import argparse

HELP = "show the applied spec, last sync and conditions (exit 0 only when in sync)"

# health state -> exit code; 1, 3 and 4 mean what they mean for `sync`.
EXIT_CODES = {"in-sync": 0, "refused": 1, "error": 3, "offline": 4, "stale": 5,
              "syncing": 0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from giter_agent.core.clikit import add_output_option

    add_output_option(p)
    p.add_argument("--line", action="store_true",
                   help="one line: the state in words and its LED code (the console line)")


def run(args: argparse.Namespace) -> int:
    from giter_agent.cli.commands import load_config
    from giter_agent.core.clikit import emit
    from giter_agent.state.health import health
    from giter_agent.state.store import StateStore

    config = load_config(args, writes=False)
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
        "network": state.network.to_plain() if state.network else None,
        "resources": {k: {"path": r.path, "status": r.status}
                      for k, r in sorted(state.resources.items())},
    }
    code = EXIT_CODES[words.state]
    if args.output_format != "text":
        emit(doc, args.output_format)
        return code
    from giter_agent.device.status_led import LEGEND

    if args.line:
        print(f"giter-agent {config.device_id}: {words.line()} [LED: {LEGEND[words.state]}]")
        return code
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
        print(f"hub           {net.state if net and net.state else 'never contacted'}"
              + (f" since {net.since} ({net.reason}: {net.message})"
                 if net and net.since else f" ({config.network.url})"))
    for cond in state.conditions:
        if cond["type"] == "Stale" and cond["status"] == "True":
            print(f"STALE SPEC    {cond['message']} (since {cond['lastTransitionTime']})")
    if not state.resources:
        print("resources     none")
    from giter_agent.status.rows import resource_rows

    for row in resource_rows(state.resources, every_condition=True, since=True):
        print(row)
    return code

