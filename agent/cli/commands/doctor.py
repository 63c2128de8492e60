"""``giter-agent doctor``: check config, keys, trust file, state, pins, clock, disk, roots.

Prints one line per check and, under each problem, the command that fixes it. Exits 1
when any check fails (warnings alone exit 0), so scripts/install can stop before it
starts a service that would not work.
"""

from __future__ import annotations

import argparse

HELP = "check the installation and say what to fix"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """No options: the config comes from -c."""


def run(args: argparse.Namespace) -> int:
    from giter_agent.cli.doctor import FAIL, Doctor, render

    findings = Doctor(args.config).run()
    print(f"giter-agent doctor: {args.config}")
    print(render(findings))
    return 1 if any(f.level == FAIL for f in findings) else 0
