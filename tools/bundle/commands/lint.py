"""``giter-bundle lint``: check every resource against the agent's schemas before it ships.

Checks the work tree by default (what the next commit would hold; ``.gitignore``
honoured), or a committed tree with ``--rev`` (the branch tip, in a bare repository).
One line per finding, ``path: Reason: message``; warnings say ``warning:``; every error in
a file is listed, with the likely field name for a misspelt one and the quoting fix for
a value YAML typed as a number. The commit devices would get (the tip, or ``--rev``) is
checked for an ``Expires:`` trailer already past (a warning). Exits 1 if
there is any error, so it fits a pre-commit hook or CI.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from giter_bundle.exchange import Exchange

HELP = "validate every resource against the agent's schemas (exit 1 on errors)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rev", metavar="BRANCH|COMMIT",
                   help="lint a committed tree instead of the work tree")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")


def resolve(exchange: Exchange, rev: str) -> bytes:
    """A branch name or a full commit id, as a commit id."""
    import re

    from giter_agent.history.objects import has_object
    from giter_bundle.errors import UsageError

    if re.fullmatch(r"[0-9a-f]{40}", rev):
        if has_object(exchange.history.object_store, rev.encode()):
            return rev.encode()
    else:
        tip = exchange.history.ref(f"refs/heads/{rev}".encode())
        if tip is not None:
            return tip
    raise UsageError(f"--rev {rev}: no such branch or commit (give a branch name or a "
                     "full commit id)")


def run(args: argparse.Namespace) -> int:
    import time

    from dulwich.repo import Repo

    from giter_agent.core.layout import SPEC_FOLDERS
    from giter_bundle.commands import open_exchange
    from giter_bundle.lint import expires_findings, lint_tree
    from giter_bundle.secrets import former_keys
    from giter_bundle.worktree import candidate_paths, read_files, tree_of

    with open_exchange(args) as exchange:
        if args.rev is None and exchange.worktree is not None:
            with Repo(str(exchange.worktree)) as repo:
                files = read_files(exchange.worktree, candidate_paths(repo), SPEC_FOLDERS)
            store, tree = tree_of(files, exchange.history.object_store)
            findings = lint_tree(store, tree, former_keys=former_keys(exchange))
            what = "the work tree"
            sha = exchange.tip
        else:
            sha = resolve(exchange, args.rev or exchange.branch)
            findings = lint_tree(exchange.history.object_store, exchange.commit(sha).tree,
                                 former_keys=former_keys(exchange))
            what = f"{args.rev or exchange.branch} ({sha.decode()[:12]})"
        if sha is not None:  # the spec devices get is the tip's: its Expires: counts
            findings += expires_findings(exchange.commit(sha).message, time.time(),
                                         f"commit {sha.decode()[:12]}")
    errors = sum(f.error for f in findings)
    for finding in findings:
        if finding.error or not args.quiet:
            print(finding.line())
    warnings = len(findings) - errors
    print(f"{what}: {errors} error(s), {warnings} warning(s)")
    return 1 if errors else 0
