"""``giter-bundle artifact add PATH [--as NAME]``: put a large file in the fleet repository.

Copies PATH to ``artifacts/NAME`` in the work tree (NAME defaults to PATH's file name;
it may hold folders, ``app/server.bin``; names are lower-case ``[a-z0-9][a-z0-9._-]*``
as devices require), stages it, and prints its SHA-256 and size, with the lines a
``File`` resource needs to lay it down pinned. Commit it as any change, signed
(``giter-bundle commit -m ...`` or ``git commit -S``).

With ``--stick DIR`` (a mounted stick) or ``--free SIZE`` (``512M``, ``2G``) it warns
when the next bundle will not fit: a bundle carries the artifact deflated as git stores
it (the size printed as "in a bundle"), on top of whatever else is new. It also warns
when devices with default ``[limits]`` would refuse it as too large. Warnings go to
stderr; the exit code is 0 once the file is in place.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "put a large file under artifacts/ (add), print its sha256 and size"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = sub.add_parser("add", help="copy a file into artifacts/ of the work tree and stage it")
    a.add_argument("path", type=Path, help="the file to add")
    a.add_argument("--as", dest="name", metavar="NAME",
                   help="its name under artifacts/ (default: the file's name)")
    room = a.add_mutually_exclusive_group()
    room.add_argument("--stick", type=Path, metavar="DIR",
                      help="warn when the next bundle will not fit on this stick")
    room.add_argument("--free", metavar="SIZE",
                      help="warn when the next bundle will be larger than SIZE (512M, 2G)")


def run(args: argparse.Namespace) -> int:
    from dulwich.repo import Repo

    from giter_bundle.artifacts import add, caps_warnings, human, parse_size, stick_free
    from giter_bundle.commands import open_exchange
    from giter_bundle.errors import UsageError
    from giter_bundle.worktree import stage

    free = parse_size(args.free) if args.free else None
    if args.stick is not None:
        free = stick_free(args.stick)
    with open_exchange(args) as exchange:
        if exchange.worktree is None:
            raise UsageError("a bare repository has no work tree to add an artifact to")
        added = add(exchange.worktree, args.path, args.name)
        with Repo(str(exchange.worktree)) as repo:
            stage(repo, [added.path])
    print(f"{added.path}  sha256 {added.sha256}  {added.size} bytes ({human(added.size)}; "
          f"{human(added.deflated)} in a bundle)")
    print(f"  a File resource lays it down with:\n    artifact: {added.path}\n"
          f"    sha256: \"{added.sha256}\"")
    print("  staged; commit it signed: giter-bundle commit -m \"...\" (or git commit -S)")
    warnings = caps_warnings(added.size)
    if free is not None and added.deflated > free:
        where = f"the stick at {args.stick}" if args.stick is not None else "--free"
        warnings.append(f"the next bundle carries at least {human(added.deflated)}: more "
                        f"than the {human(free)} free on {where}")
    for warning in warnings:
        print(f"giter-bundle: warning: {warning}", file=sys.stderr)
    return 0
