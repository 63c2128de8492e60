"""``giter-agent plan``: what applying the newest verified spec would change, changing nothing.

Reads the state file and the repository (no lock taken, nothing written; see
``giter_agent.reconcile.plan``), so it runs safely beside the daemon. Exit code 0 whether or not
something would change; 1 if the accepted spec's tree cannot be read. With
``--detailed-exitcode`` (terraform's flag, opt-in as there): ``0`` nothing would change,
``3`` something would change or be pruned, ``1`` an error or a resource the device would
refuse (INVALID); ``2`` stays what it is for every command, a usage or configuration
error, which is why "changes" is not terraform's 2.
"""

from __future__ import annotations

import argparse

HELP = "show what applying the newest verified spec would change (a dry run)"

CHANGES = 3  # --detailed-exitcode: something would change

_MARK = {"change": "change", "none": "-", "invalid": "INVALID", "prune": "prune",
         "keep": "keep", "unknown": "?"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from giter_agent.core.clikit import add_output_option

    add_output_option(p)
    p.add_argument("--detailed-exitcode", action="store_true",
                   help=f"exit 0 when nothing would change, {CHANGES} when something "
                   "would, 1 on an error or an invalid resource")
    p.add_argument("--all", action="store_true",
                   help="also list resources that would not change")


def run(args: argparse.Namespace) -> int:
    import sys

    from giter_agent.cli.commands import load_config
    from giter_agent.core.clikit import emit
    from giter_agent.core.errors import TreeError
    from giter_agent.reconcile.plan import (
        plan,
        read_artifacts,
        read_spec,
        refuse_pins,
        window_facts,
    )
    from giter_agent.state.store import StateStore
    from giter_agent.sync.agent import Agent

    config = load_config(args, writes=False)
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
        urgent, spec_time = window_facts(agent.repo_path, state.accepted)
        with read_artifacts(agent.repo_path, state.accepted,
                            config.limits.max_artifact_mib * 2**20) as artifacts:
            agent.ctx.artifacts = artifacts
            steps = plan(specset, agent.ctx, agent.kinds, state.resources, urgent=urgent,
                         spec_time=spec_time)
    finally:
        agent.close()
    counts = {a: sum(1 for s in steps if s.action == a) for a in _MARK}
    if not args.detailed_exitcode:
        code = 0
    elif counts["invalid"]:
        code = 1
    else:
        code = CHANGES if counts["change"] or counts["prune"] else 0
    if args.output_format != "text":
        emit({"spec": state.accepted, "applied": state.applied,
              "steps": [s.as_dict() for s in steps]}, args.output_format)
        return code
    applied = "applied" if state.applied == state.accepted else \
        f"not applied yet; applied is {(state.applied or 'none')[:12]}"
    print(f"plan for spec {state.accepted[:12]} ({applied})")
    width = max((len(s.key) for s in steps), default=0)
    for step in steps:
        if step.action == "none" and not args.all:
            continue
        print(f"  {_MARK[step.action]:<8} {step.key:<{width}}  {step.detail}")
    print(f"{counts['change']} to change, {counts['none']} unchanged, {counts['prune']} to "
          f"prune, {counts['keep']} kept, {counts['invalid']} invalid")
    return code
