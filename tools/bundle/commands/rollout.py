"""``giter-bundle rollout status|advance|pause|resume|abort NAME``: drive a staged rollout.

``status`` shows each device's wave and state and whether the gate is open, evaluated
from the devices' signed status commits (``giter_bundle.rollout``); it exits 1 when a
device of an open wave failed or the rollout's ``timeLimit`` ran out. ``advance`` opens
the next wave only if the gate is open, in a signed commit on the spec branch whose
message records the evidence: one ``Evidence: <device> <status commit>`` trailer per
Ready device. ``pause`` and ``resume`` stop and allow ``advance``; ``abort`` sends
every device back to the baseline version (a signed commit setting ``aborted: true``,
recording the failures).
Each change is one edit of ``rollouts/NAME.yaml``; devices act on it when they get the
commit, over the network, a stick or serial alike. See docs/fleet.md.
"""

from __future__ import annotations

import argparse
from typing import Any

from giter_bundle.commands import add_signing_arguments

HELP = "status, advance, pause, resume or abort a staged rollout (rollouts/NAME.yaml)"
ACTIONS = ("status", "advance", "pause", "resume", "abort")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from giter_agent.core.clikit import add_output_option

    p.add_argument("action", choices=ACTIONS)
    p.add_argument("name", help="the rollout (rollouts/NAME.yaml)")
    add_output_option(p)
    add_signing_arguments(p)


def _print(gate: Any) -> None:
    rollout = gate.rollout
    print(f"rollout {rollout.name}: {rollout.open_waves}/{len(rollout.waves)} wave(s) open"
          f" (baseline {rollout.baseline[:12]}, spec {gate.spec_commit[:12]})")
    width = max((len(d.device) for d in gate.devices), default=6)
    for d in gate.devices:
        commit = (d.status_commit or "")[:12] or "-"
        print(f"  {d.device:<{width}}  {d.wave or '-':<10} {d.state:<10} {commit:<12} "
              f"{d.detail}")
    print(f"gate: {gate.why}")


def _commit(exchange: Any, args: argparse.Namespace, rollout: Any, changes: dict[str, Any],
            message: str) -> str:
    from giter_bundle import signing

    root = exchange.worktree or exchange.git_dir
    key = signing.load_key(signing.key_path(args.signing_key, root))
    sha = exchange.commit_files({rollout.path: rollout.with_spec(**changes)}, message, key,
                                signing.identity(args.author, root))
    return str(sha.decode()[:12])


def run(args: argparse.Namespace) -> int:
    from giter_bundle.commands import open_exchange
    from giter_bundle.errors import PublisherError
    from giter_bundle.rollout import evaluate

    with open_exchange(args) as exchange:
        gate = evaluate(exchange, args.name)
        rollout = gate.rollout
        if args.action == "status":
            if args.output_format != "text":
                from dataclasses import asdict

                from giter_agent.core.clikit import emit

                emit({"rollout": rollout.name, "openWaves": rollout.open_waves,
                      "waves": [w.name for w in rollout.waves], "gate": gate.open,
                      "why": gate.why, "spec": gate.spec_commit,
                      "timedOut": gate.timed_out,
                      "devices": [asdict(d) for d in gate.devices]}, args.output_format)
            else:
                _print(gate)
            return 1 if gate.failed or gate.timed_out else 0
        if rollout.aborted:
            raise PublisherError(f"rollout {rollout.name} is aborted", reason="RolloutAborted")
        if args.action == "advance":
            if not gate.open:
                _print(gate)
                reason = ("RolloutPaused" if rollout.paused and not gate.failed
                          else "RolloutComplete" if rollout.open_waves == len(rollout.waves)
                          else "RolloutTimedOut" if gate.timed_out
                          else "RolloutGateClosed")
                raise PublisherError(f"rollout {rollout.name} not advanced: {gate.why}",
                                     reason=reason)
            wave = rollout.waves[rollout.open_waves].name
            evidence = "".join(f"Evidence: {d.device} {d.status_commit}\n"
                               for d in gate.evidence)
            message = (f"Rollout {rollout.name}: open wave {wave}\n\nGate: {gate.why}\n\n"
                       + evidence)
            sha = _commit(exchange, args, rollout, {"openWaves": rollout.open_waves + 1},
                          message)
            print(f"rollout {rollout.name}: wave {wave} open; {len(gate.evidence)} status "
                  f"commit(s) recorded as evidence; {exchange.branch} at {sha}")
            return 0
        if args.action in ("pause", "resume"):
            paused = args.action == "pause"
            if rollout.paused == paused:
                print(f"rollout {rollout.name} is already {'paused' if paused else 'running'}")
                return 0
            sha = _commit(exchange, args, rollout, {"paused": paused},
                          f"Rollout {rollout.name}: {args.action}\n")
            print(f"rollout {rollout.name}: {args.action}d; {exchange.branch} at {sha}")
            return 0
        failures = "".join(f"Failed: {d.device} {d.status_commit or '-'} {d.detail}\n"
                           for d in gate.failed)
        message = (f"Rollout {rollout.name}: abort, every device back on baseline "
                   f"{rollout.baseline[:12]}\n\n" + failures)
        sha = _commit(exchange, args, rollout, {"aborted": True}, message)
        print(f"rollout {rollout.name}: aborted; devices return to the baseline version; "
              f"{exchange.branch} at {sha}")
    return 0
