"""``giter-agent key``: the device's public key as an allowed_signers line, for enrolment."""

from __future__ import annotations

import argparse

HELP = "print the device public key as an allowed_signers line"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """No options."""


def run(args: argparse.Namespace) -> int:
    from giter_agent.cli.commands import load_config
    from giter_agent.core.durable import mkdir_durable
    from giter_agent.trust.devicekey import allowed_signers_line, load_or_create

    config = load_config(args)
    mkdir_durable(config.state_dir, mode=0o700)
    print(allowed_signers_line(load_or_create(config.state_dir / "device_key"),
                               config.device_id))
    return 0
