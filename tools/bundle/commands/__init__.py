"""The ``giter-bundle`` subcommands, one module each.

Each module has ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``,
as ``cli.commands`` does, and imports what its command needs inside ``run``. The
module is named after the command, except ``import`` (a Python keyword), which lives in
``import_.py``. To add a command, add a module and a name to ``COMMANDS``.

Every command sees the global options ``args.repo`` (``-C``, the exchange repository)
and ``args.branch`` (the spec branch).
"""

from __future__ import annotations

import argparse
import keyword
from typing import Any

COMMANDS = ("init", "enroll", "label", "commit", "lint", "render", "rollout", "create",
            "import", "status", "inspect", "serial", "secret", "artifact", "hub", "report",
            "watch")


def module_name(command: str) -> str:
    """The module under ``giter_bundle.commands`` that implements ``command``."""
    return f"{command}_" if keyword.iskeyword(command) else command


def open_exchange(args: argparse.Namespace) -> Any:
    """The exchange repository named by ``-C`` (default: the current folder)."""
    from giter_bundle.exchange import Exchange

    return Exchange.open(args.repo, args.branch)


def add_signing_arguments(p: argparse.ArgumentParser) -> None:
    """``--signing-key`` and ``--author``, for the commands that make signed commits."""
    p.add_argument("--signing-key", type=_path, metavar="FILE",
                   help="OpenSSH key to sign with: a private key file (a passphrase is "
                   "asked for), or its .pub when ssh-agent holds the key; FIDO keys work "
                   "(default: git config user.signingkey)")
    p.add_argument("--author", metavar="'NAME <EMAIL>'",
                   help="author and committer (default: git config user.name/user.email)")


def _path(text: str) -> Any:
    from pathlib import Path

    return Path(text).expanduser()
