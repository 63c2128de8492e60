"""``giter-agent plan``: what applying the newest verified spec would change, changing nothing.

Reads the state file and the repository (no lock taken, nothing written; see
``reconcile.plan``), so it runs safely beside the daemon. Exit code 0 whether or not
something would change; 1 if the accepted spec's tree cannot be read.
"""

from __future__ import annotations

import argparse
import json

HELP = "show what applying the newest verified spec would change (a dry run)"

_MARK = {"change": "change", "none": "-", "invalid": "INVALID", "prune": "prune",
         "keep": "keep", "unknown": "?"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--all", action="store_true",
                   help="also list resources that would not change")


def run(args: argparse.Namespace) -> int:
    import sys

    from giter_agent.cli.commands import load_config
    from giter_agent.core.errors import TreeError
    from giter_agent.reconcile.plan import plan, read_spec, refuse_pins
    from giter_agent.state.store import StateStore
    from giter_agent.sync.agent import Agent

    config = load_config(args)
    state = StateStore(config.state_dir).load()
    if not state.accepted:
        print("no verified spec yet: nothing to plan")
        return 0
    agent = Agent(config, pin_factory_maker=refuse_pins)
    try:
        try:
            specset = read_spec(agent.repo_path, state.accepted, config.device_id,
                                config.groups)
        except TreeError as exc:
            print(f"giter-agent: {exc.reason}: spec {state.accepted[:12]}: {exc}",
                  file=sys.stderr)
            return 1
        steps = plan(specset, agent.ctx, agent.kinds, state.resources)
    finally:
        agent.close()
    if args.json:
        print(json.dumps({"spec": state.accepted, "applied": state.applied,
                          "steps": [s.as_dict() for s in steps]}, indent=2))
        return 0
    applied = "applied" if state.applied == state.accepted else \
        f"not applied yet; applied is {(state.applied or 'none')[:12]}"
    print(f"plan for spec {state.accepted[:12]} ({applied})")
    width = max((len(s.key) for s in steps), default=0)
    for step in steps:
        if step.action == "none" and not args.all:
            continue
        print(f"  {_MARK[step.action]:<8} {step.key:<{width}}  {step.detail}")
    counts = {a: sum(1 for s in steps if s.action == a) for a in _MARK}
    print(f"{counts['change']} to change, {counts['none']} unchanged, {counts['prune']} to "
          f"prune, {counts['keep']} kept, {counts['invalid']} invalid")
    return 0
