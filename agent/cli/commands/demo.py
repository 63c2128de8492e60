"""``giter-agent demo``: the signed round trip in a temporary folder (see agent.demo)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "run the signed round trip in a temporary folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep", type=Path, metavar="DIR",
                   help="run in DIR (must be empty or absent) and keep it afterwards")


def run(args: argparse.Namespace) -> int:
    from giter_agent.cli.demo import run_demo

    return run_demo(args.keep)
